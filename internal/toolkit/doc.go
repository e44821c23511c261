// Package toolkit does the chores the apic toolkit is usually installed
// for: apic-token, apic-register and apic-realms. Each is a function of
// (ctx, options, stdout, stderr); the cobra glue reads the options from
// the flags, the APIC_* variables, files and standard input. It also holds
// the flags and secret sources that every command that logs in shares,
// the apic-proxy quick start's included. Package toolkitcmd registers the
// commands.

package toolkit
