package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
)

// The storm and upload clients run as subcommands of this program, in
// their own processes, as wrk does: the servers in the benchmark's
// process (upstream, simulator) then share no Go scheduler with the
// client that loads them.
//
//	bench storm -url URL -n 1000
//	bench upload -url URL [-unix SOCKET] -bytes N [-chunked] [-multipart]
//
// Each prints its result as one JSON object on standard output.

// subcommand runs a client subcommand if args name one, and reports
// whether they did.
func subcommand(ctx context.Context, args []string) (code int, ok bool) {
	if len(args) == 0 {
		return 0, false
	}
	var err error
	switch args[0] {
	case "storm":
		err = stormMain(ctx, args[1:])
	case "upload":
		err = uploadMain(ctx, args[1:])
	default:
		return 0, false
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench %s: %v\n", args[0], err)
		return 1, true
	}
	return 0, true
}

func stormMain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("storm", flag.ContinueOnError)
	url := fs.String("url", "", "URL to GET")
	n := fs.Int("n", 1000, "concurrent requests")
	timeout := fs.Duration("timeout", 60*time.Second, "bound of each request")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *url == "" || *n < 1 {
		return errors.New("want -url and -n of at least 1")
	}
	return json.NewEncoder(os.Stdout).Encode(storm(ctx, *url, *n, *timeout))
}

// uploadResult is what the upload subcommand prints.
type uploadResult struct {
	Status  int             `json:"status"`
	Seconds float64         `json:"seconds"`
	Bytes   int64           `json:"bytes"`
	Answer  json.RawMessage `json:"answer"`
	// ReceivedBytes and ReceivedSHA256 are what the simulator's publish
	// says it received, in its answer's headers.
	ReceivedBytes  int64  `json:"received_bytes,omitempty"`
	ReceivedSHA256 string `json:"received_sha256,omitempty"`
}

func uploadMain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("upload", flag.ContinueOnError)
	url := fs.String("url", "", "URL to POST to")
	unix := fs.String("unix", "", "connect to this unix socket instead of the URL's host")
	n := fs.Int64("bytes", 0, "bytes of zeros to send")
	chunked := fs.Bool("chunked", false, "send the body chunked, without a Content-Length")
	multipart := fs.Bool("multipart", false, "wrap the zeros in a multipart/form-data body")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *url == "" || *n < 1 {
		return errors.New("want -url and -bytes")
	}
	tr := &http.Transport{DisableKeepAlives: true}
	if *unix != "" {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", *unix)
		}
	}
	var (
		body        io.Reader = &zeros{n: *n}
		size                  = *n
		contentType           = "application/octet-stream"
	)
	if *multipart {
		mp := newMultipartBody(*n)
		body, size, contentType = mp.reader(), mp.size(), mp.contentType()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, *url, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	if *chunked {
		req.ContentLength = -1
		req.TransferEncoding = []string{"chunked"}
	} else {
		req.ContentLength = size
	}
	t0 := time.Now()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	took := time.Since(t0)
	if err != nil {
		return err
	}
	if !json.Valid(answer) {
		answer, _ = json.Marshal(string(answer))
	}
	received, _ := strconv.ParseInt(resp.Header.Get(apicsim.ReceivedBytesHeader), 10, 64)
	return json.NewEncoder(os.Stdout).Encode(uploadResult{
		Status: resp.StatusCode, Seconds: took.Seconds(), Bytes: size, Answer: answer,
		ReceivedBytes: received, ReceivedSHA256: resp.Header.Get(apicsim.ReceivedSHA256),
	})
}

// runClient runs a client subcommand of this program and decodes its
// result into v.
func (b *bench) runClient(ctx context.Context, v any, args ...string) error {
	cmd := exec.CommandContext(ctx, b.self, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", args[0], err, bytes.TrimSpace(stderr.Bytes()))
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("%s: %v", args[0], err)
	}
	if s := bytes.TrimSpace(stderr.Bytes()); len(s) > 0 {
		b.logf("%s: %s", args[0], s)
	}
	return nil
}

// runStorm runs the storm client against url.
func (b *bench) runStorm(ctx context.Context, url string) (stormResult, error) {
	var res stormResult
	err := b.runClient(ctx, &res, "storm", "-url", url, "-n", strconv.Itoa(b.s.Storm))
	return res, err
}
