package server

import (
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// refusal is the whole reply to a connection over the cap.
var refusal = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: " + retryBusy +
	"\r\nConnection: close\r\nContent-Length: " + strconv.Itoa(len(refusalBody)) + "\r\n\r\n" + refusalBody

const refusalBody = `{"error":{"message":"too many connections are open; retry later","type":"server_error","param":null,"code":"too_many_connections"}}`

// limitConns wraps ln so that at most max connections are open at once
// (max 0: no limit). One more is answered 503 and closed, not left waiting
// in the accept queue, so a flood of idle or slow connections costs the
// process a bounded number of descriptors and goroutines and the clients a
// clear answer.
func limitConns(ln net.Listener, max int, m *metrics) net.Listener {
	if max <= 0 {
		return ln
	}
	return &limitListener{Listener: ln, slots: make(chan struct{}, max), m: m}
}

type limitListener struct {
	net.Listener
	slots chan struct{}
	m     *metrics
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			l.m.conn(1)
			return &slotConn{Conn: c, free: func() { <-l.slots; l.m.conn(-1) }}, nil
		default:
			l.m.refuse()
			go refuse(c)
		}
	}
}

// refuse answers 503 and closes c, reading what the client sent meanwhile
// so that the close does not reset the connection before the client has
// read the answer; a second at most.
func refuse(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(c, refusal); err != nil {
		return
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	io.Copy(io.Discard, io.LimitReader(c, 1<<16))
}

// slotConn frees its slot once, on the first Close.
type slotConn struct {
	net.Conn
	once sync.Once
	free func()
}

func (c *slotConn) Close() error {
	c.once.Do(c.free)
	return c.Conn.Close()
}

// isLoopback reports whether addr is reachable only from this machine: a
// loopback IP, or not an IP address at all (a Unix socket).
func isLoopback(addr net.Addr) bool {
	if a, ok := addr.(*net.TCPAddr); ok {
		return a.IP.IsLoopback()
	}
	return true
}
