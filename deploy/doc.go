// Package deploy holds no Go code: its folder carries the systemd unit and
// the sample configuration for running xsessiond as a service.
package deploy
