package tunnel

import "testing"

// TestClientTLSConfigNeedsName: without a name the verifier would skip
// the name check and take any gateway certificate of the server CA.
func TestClientTLSConfigNeedsName(t *testing.T) {
	f := newFixture(t)
	if _, err := clientTLSConfig(f.clientCreds, "", nil, nil, &clientHandshake{}); err == nil {
		t.Fatal("client TLS config built without a gateway name")
	}
	if _, err := clientTLSConfig(f.clientCreds, "127.0.0.1", nil, nil, &clientHandshake{}); err != nil {
		t.Fatal(err)
	}
}
