package daemon_test

import (
	"strings"
	"testing"

	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/daemon"
)

// The command-line form has one parser, config.ParseForward; whatever it
// accepts must convert into a forward the tunnel accepts, and print back
// into a flag that parses to the same forward.
func FuzzForwardSpec(f *testing.F) {
	for _, s := range []string{"8080:db:5432", "[::1]:1:[2001:db8::2]:3", "1080", "*:1:a:2", "localhost:9000:localhost:3000", "0.0.0.0:0:db.corp.example:5432"} {
		f.Add(byte('L'), s)
		f.Add(byte('R'), s)
		f.Add(byte('D'), s)
	}
	f.Fuzz(func(t *testing.T, k byte, spec string) {
		kind := []string{"L", "R", "D"}[int(k)%3]
		fw, err := config.ParseForward(kind, spec)
		if err != nil {
			return
		}
		tf, err := daemon.TunnelForward(fw)
		if err != nil {
			t.Fatalf("-%s %q -> %+v: %v", kind, spec, fw, err)
		}
		if err := tf.Validate(); err != nil {
			t.Fatalf("-%s %q -> %+v -> tunnel refuses it: %v", kind, spec, fw, err)
		}
		flag := fw.String()
		again, err := config.ParseForward(kind, strings.TrimPrefix(flag, "-"+kind+" "))
		if err != nil || again != fw {
			t.Fatalf("-%s %q -> %+v -> %q -> %+v, %v", kind, spec, fw, flag, again, err)
		}
	})
}
