// Command benchctl holds the small chores of bench/run that a shell does
// badly without extra tools:
//
//	benchctl ports N          print N free TCP ports on 127.0.0.1, one a line
//	benchctl sum URL KEY      GET URL (JSON) and print the sum of every number
//	                          under every member named KEY, at any depth
//	benchctl json URL KEY     GET URL (JSON) and print the first member named
//	                          KEY, compact
//
// A URL that cannot be fetched, a status other than 200, or a KEY that is
// not found exits with status 1.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "benchctl:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: benchctl ports N | sum URL KEY | json URL KEY")
	}
	switch {
	case args[0] == "ports" && len(args) == 2:
		n, err := strconv.Atoi(args[1])
		if err != nil || n < 1 {
			return fmt.Errorf("ports: want a count, got %q", args[1])
		}
		// Hold every listener until all are taken, so the ports differ.
		var lns []net.Listener
		defer func() {
			for _, ln := range lns {
				ln.Close()
			}
		}()
		for range n {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			lns = append(lns, ln)
		}
		for _, ln := range lns {
			fmt.Println(ln.Addr().(*net.TCPAddr).Port)
		}
		return nil
	case (args[0] == "sum" || args[0] == "json") && len(args) == 3:
		v, err := fetch(args[1])
		if err != nil {
			return err
		}
		found := find(v, args[2])
		if len(found) == 0 {
			return fmt.Errorf("no member %q in %s", args[2], args[1])
		}
		if args[0] == "json" {
			b, err := json.Marshal(found[0])
			if err != nil {
				return err
			}
			fmt.Println(string(b))
			return nil
		}
		var sum float64
		for _, f := range found {
			sum += sumNumbers(f)
		}
		fmt.Println(strconv.FormatFloat(sum, 'f', -1, 64))
		return nil
	}
	return fmt.Errorf("usage: benchctl ports N | sum URL KEY | json URL KEY")
}

func fetch(url string) (any, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %d: %s", url, resp.StatusCode, bytes.TrimSpace(body))
	}
	var v any
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("GET %s: %v", url, err)
	}
	return v, nil
}

// find returns the values of every member named key, at any depth.
func find(v any, key string) []any {
	var out []any
	switch v := v.(type) {
	case map[string]any:
		for k, m := range v {
			if k == key {
				out = append(out, m)
			} else {
				out = append(out, find(m, key)...)
			}
		}
	case []any:
		for _, m := range v {
			out = append(out, find(m, key)...)
		}
	}
	return out
}

func sumNumbers(v any) float64 {
	switch v := v.(type) {
	case json.Number:
		f, _ := v.Float64()
		return f
	case map[string]any:
		var s float64
		for _, m := range v {
			s += sumNumbers(m)
		}
		return s
	case []any:
		var s float64
		for _, m := range v {
			s += sumNumbers(m)
		}
		return s
	}
	return 0
}
