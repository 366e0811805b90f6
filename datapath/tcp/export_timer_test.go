package tcp

// StopTimer stops c's timer (Close's deadline, a connect's) and reports
// whether one was pending.
func StopTimer(c *Conn) bool {
	c.timerMu.Lock()
	defer c.timerMu.Unlock()
	return c.timer != nil && c.timer.Stop()
}
