package app

import (
	"context"
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/api"
)

// mapSleepFlags asks the daemon for its workers' sleep flags page
// (api.SleepFlags) and maps it read-only. The page must be a memfd of at
// least api.SleepFlagsSize bytes that cannot shrink (so that reading it
// can never fault); anything else is refused.
func mapSleepFlags(ctx context.Context, cl *api.Client) ([]byte, error) {
	_, fds, err := api.Do[*api.SleepFlagsReply](ctx, cl, &api.SleepFlags{})
	if err != nil {
		return nil, err
	}
	fd := fds[0]
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("sleep flags: %w", err)
	}
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil || seals&unix.F_SEAL_SHRINK == 0 || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size < api.SleepFlagsSize {
		return nil, fmt.Errorf("sleep flags: %w: not a sealed page of %d bytes", ErrProtocol, api.SleepFlagsSize)
	}
	mem, err := unix.Mmap(fd, 0, api.SleepFlagsSize, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("sleep flags: mmap: %w", err)
	}
	return mem, nil
}

// sleepFlag returns worker w's word of the sleep flags page, nil if there
// is none (the app then kicks after every SetEvent).
func (a *App) sleepFlag(w uint32) *atomic.Uint32 {
	if a.sleepFlags == nil || int(w) >= len(a.kicks) || int(w) >= api.MaxKickFDs {
		return nil
	}
	return api.SleepFlag(a.sleepFlags, int(w))
}
