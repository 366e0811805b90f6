// Command httpd is a small xsessiond app serving HTTP with net/http over
// app.Listen: GET /bytes/N answers N bytes where byte i is i mod 251, POST
// /echo answers the request's body, GET /healthz answers "ok".
package main
