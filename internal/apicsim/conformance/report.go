package conformance

import (
	"encoding/json"
	"fmt"
	"os"
)

// LogEnv is the environment variable that names the file where test
// helpers append one Report per checked simulator, as a JSON line.
const LogEnv = "APICSIM_CONFORMANCE_LOG"

// Report is what a Checker found, as cmd/apicsim serves it at
// /_sim/conformance and as the log holds it (one JSON line each).
type Report struct {
	// Test names the test the simulator served, in the log.
	Test string `json:"test,omitempty"`
	// Counts are the checker's counts.
	Counts Counts `json:"counts"`
	// Served are the operation ids answered with a declared 2xx.
	Served []string `json:"served"`
	// Mismatches are the first mismatches found (Counts has how many).
	Mismatches []Mismatch `json:"mismatches"`
}

// Report returns the checker's counts, served operations and mismatches.
func (c *Checker) Report() Report {
	r := Report{Counts: c.Counts(), Served: c.Served(), Mismatches: c.Mismatches()}
	if r.Served == nil {
		r.Served = []string{}
	}
	if r.Mismatches == nil {
		r.Mismatches = []Mismatch{}
	}
	return r
}

// AppendLog appends r to the file as one JSON line, in one write to a file
// opened with O_APPEND, so that parallel tests and processes appending to
// the same file never interleave their lines.
func AppendLog(file string, r Report) error {
	line, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("conformance log: %v", err)
	}
	line = append(line, '\n')
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("conformance log: %v", err)
	}
	_, werr := f.Write(line)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("conformance log %s: %v", file, werr)
	}
	return nil
}
