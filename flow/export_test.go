package flow

// CachedURI returns ParseURI's cache entry: an identity that changes on
// every miss that parsed, and the URI and endpoint it holds.
func CachedURI() (id any, uri string, ep Endpoint) {
	c := lastURI.Load()
	if c == nil {
		return nil, "", Endpoint{}
	}
	return c, c.uri, c.ep
}
