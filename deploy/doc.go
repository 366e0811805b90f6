// Package deploy holds no Go code: its folder carries the systemd unit,
// the sample configuration and the Grafana dashboard for running
// xsessiond as a service.
package deploy
