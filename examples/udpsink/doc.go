// Command udpsink is a small xsessiond app that receives UDP datagrams with
// the batch API, counts them and reports the rate.
package main
