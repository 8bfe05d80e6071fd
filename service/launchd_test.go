package service

import (
	"encoding/xml"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/twoway/twoway/config"
)

// plistValue is a decoded property-list value: string, int, bool,
// []plistValue or map[string]plistValue.
type plistValue any

// parsePlist decodes the top-level dict of an XML property list with
// encoding/xml, independently of how LaunchdPlist writes it.
func parsePlist(t *testing.T, doc string) map[string]plistValue {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(doc))
	var parse func(start xml.StartElement) plistValue
	parse = func(start xml.StartElement) plistValue {
		switch start.Name.Local {
		case "string", "integer":
			var s string
			if err := d.DecodeElement(&s, &start); err != nil {
				t.Fatal(err)
			}
			return s
		case "true", "false":
			d.Skip()
			return start.Name.Local == "true"
		case "array":
			var out []plistValue
			for {
				tok, err := d.Token()
				if err != nil {
					t.Fatal(err)
				}
				switch tok := tok.(type) {
				case xml.StartElement:
					out = append(out, parse(tok))
				case xml.EndElement:
					return out
				}
			}
		case "dict":
			out := map[string]plistValue{}
			key := ""
			for {
				tok, err := d.Token()
				if err != nil {
					t.Fatal(err)
				}
				switch tok := tok.(type) {
				case xml.StartElement:
					if tok.Name.Local == "key" {
						if err := d.DecodeElement(&key, &tok); err != nil {
							t.Fatal(err)
						}
						continue
					}
					if key == "" {
						t.Fatalf("value <%s> without a key", tok.Name.Local)
					}
					out[key] = parse(tok)
					key = ""
				case xml.EndElement:
					return out
				}
			}
		}
		t.Fatalf("unexpected element <%s>", start.Name.Local)
		return nil
	}
	for {
		tok, err := d.Token()
		if err == io.EOF {
			t.Fatal("no dict in plist")
		}
		if err != nil {
			t.Fatal(err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "dict" {
			return parse(se).(map[string]plistValue)
		}
	}
}

func TestServiceLaunchdPlist(t *testing.T) {
	c := Config{Role: config.RoleClient, ConfigPath: "/usr/local/etc/twoway/client & <co>.toml", Executable: "/usr/local/bin/twoway"}.WithDefaults()
	doc, err := LaunchdPlist(c)
	if err != nil {
		t.Fatal(err)
	}
	p := parsePlist(t, doc)
	if p["Label"] != "twoway-client" {
		t.Errorf("Label = %v", p["Label"])
	}
	var argv []string
	for _, a := range p["ProgramArguments"].([]plistValue) {
		argv = append(argv, a.(string))
	}
	if want := append([]string{c.Executable}, c.Arguments()...); !reflect.DeepEqual(argv, want) {
		t.Errorf("ProgramArguments = %q, want %q", argv, want)
	}
	if p["RunAtLoad"] != true {
		t.Errorf("RunAtLoad = %v", p["RunAtLoad"])
	}
	if ka, ok := p["KeepAlive"].(map[string]plistValue); !ok || ka["SuccessfulExit"] != false {
		t.Errorf("KeepAlive = %v, want restart after failures only", p["KeepAlive"])
	}
	if p["StandardOutPath"] != "/var/log/twoway/twoway-client.out.log" || p["StandardErrorPath"] != "/var/log/twoway/twoway-client.err.log" {
		t.Errorf("logs go to %v and %v", p["StandardOutPath"], p["StandardErrorPath"])
	}
	if _, ok := p["UserName"]; ok {
		t.Error("plist sets UserName; utun needs root")
	}
	if strings.Contains(doc, "{{") {
		t.Error("plist contains a template action")
	}
}

func TestServiceLaunchdPlistRejectsRelative(t *testing.T) {
	c := Config{Role: config.RoleServer, ConfigPath: "server.toml", Executable: "/usr/local/bin/twoway"}.WithDefaults()
	if _, err := LaunchdPlist(c); err == nil {
		t.Fatal("relative configuration path accepted")
	}
}
