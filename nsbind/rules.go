package nsbind

import (
	"fmt"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// subscribeRules follows the namespace nsh's policy routing rules (`ip
// rule`, IPv4 and IPv6): it sends on ch for each rule added or deleted,
// until done closes, then closes ch. The netlink package has no
// subscription of its own for rules; this one runs as its others do (see
// subscribe.go), cberr taking the socket's failure.
func subscribeRules(nsh netns.NsHandle, ch chan<- struct{}, done <-chan struct{}, cberr func(error)) error {
	s, err := nl.SubscribeAt(nsh, netns.None(), unix.NETLINK_ROUTE, unix.RTNLGRP_IPV4_RULE, unix.RTNLGRP_IPV6_RULE)
	if err != nil {
		return err
	}
	go func() {
		<-done
		s.Close()
	}()
	go func() {
		defer close(ch)
		for {
			msgs, from, err := s.Receive()
			if err != nil {
				cberr(fmt.Errorf("receive rule changes: %w", err))
				return
			}
			if from.Pid != nl.PidKernel {
				continue
			}
			for _, m := range msgs {
				if m.Header.Type == unix.RTM_NEWRULE || m.Header.Type == unix.RTM_DELRULE {
					ch <- struct{}{}
				}
			}
		}
	}()
	return nil
}
