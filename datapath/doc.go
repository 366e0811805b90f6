// Package datapath runs xsessiond's per-queue workers: each owns one NIC
// queue and its AF_XDP socket (package datapath/xsk), parses frames, looks
// sessions up in its shard of the tables, hands them to a transport
// (package datapath/udp) and delivers payloads into app fifos; on the way out
// it drains app tx fifos into frames built from per-session templates.
package datapath
