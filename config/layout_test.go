package config

import (
	"testing"

	"github.com/BurntSushi/toml"
)

const layoutDoc = `# comment
title = "x"
[tls]
cert = "a"
"quoted key" = 1
multi = """
line "" \"""
"""
after = 2
arr = [
  "a",
  # c
  "b, [not a bracket",
]
[[policy.rule]]
name = "a"
[[ policy.rule ]]
name = 'b'
targets = ["x", "y"] # trailing
[policy.rule.sub]
k = 1
inline = { a = 1, b.c = [1, 2] }
lit = '''
x'''
z = 1979-05-27 07:32:00Z
[[policy.rule]]
name = "c"
[a]
b.c = 1
`

func TestScanLayout(t *testing.T) {
	var v map[string]any
	if _, err := toml.Decode(layoutDoc, &v); err != nil {
		t.Fatalf("test document is not valid TOML: %v", err)
	}
	l := scanLayout([]byte(layoutDoc))
	want := map[string]int{
		"title":                            2,
		"tls":                              3,
		"tls.cert":                         4,
		`tls."quoted key"`:                 5,
		"tls.multi":                        6,
		"tls.after":                        9,
		"tls.arr":                          10,
		"tls.arr[0]":                       11,
		"tls.arr[1]":                       13,
		"policy.rule":                      15,
		"policy.rule[0]":                   15,
		"policy.rule[0].name":              16,
		"policy.rule[1]":                   17,
		"policy.rule[1].name":              18,
		"policy.rule[1].targets[0]":        19,
		"policy.rule[1].targets[1]":        19,
		"policy.rule[1].sub":               20,
		"policy.rule[1].sub.k":             21,
		"policy.rule[1].sub.inline.a":      22,
		"policy.rule[1].sub.inline.b.c":    22,
		"policy.rule[1].sub.inline.b.c[1]": 22,
		"policy.rule[1].sub.lit":           23,
		"policy.rule[1].sub.z":             25,
		"policy.rule[2]":                   26,
		"policy.rule[2].name":              27,
		"a.b.c":                            29,
	}
	for path, line := range want {
		if got, ok := l.lines[path]; !ok || got != line {
			t.Errorf("line of %s = %d (recorded %v), want %d", path, got, ok, line)
		}
	}
	// Fallback to the nearest recorded ancestor.
	for path, line := range map[string]int{
		"policy.rule[1].missing":    17,
		"policy.rule[1].targets[7]": 19,
		"tls.nothing.deeper":        3,
		"nowhere":                   0,
	} {
		if got := l.line(path); got != line {
			t.Errorf("line(%s) = %d, want %d", path, got, line)
		}
	}
	if got := l.first["policy.rule.name"]; got != "policy.rule[0].name" {
		t.Errorf("first[policy.rule.name] = %q", got)
	}
	if got := l.first["policy.rule.targets"]; got != "policy.rule[1].targets" {
		t.Errorf("first[policy.rule.targets] = %q", got)
	}
}

func TestStripIndices(t *testing.T) {
	for in, want := range map[string]string{
		"policy.rule[1].targets[0]": "policy.rule.targets",
		"servers":                   "servers",
		`a."x[1]".b[2]`:             `a."x[1]".b`,
	} {
		if got := stripIndices(in); got != want {
			t.Errorf("stripIndices(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzScanLayout(f *testing.F) {
	f.Add([]byte(layoutDoc))
	f.Add([]byte(ExampleServer()))
	f.Add([]byte(ExampleClient()))
	f.Add([]byte("a = [[[\n'''"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l := scanLayout(data) // must not panic or loop, valid TOML or not
		for path, line := range l.lines {
			if line < 1 || path == "" {
				t.Fatalf("bad entry %q -> %d", path, line)
			}
		}
	})
}
