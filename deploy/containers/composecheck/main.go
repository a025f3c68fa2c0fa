// Command composecheck loads compose files as `docker compose config` does, with the
// loader behind it (github.com/compose-spec/compose-go/v2): schema validation, the
// environment and .env interpolated, files merged in order (with !reset and !override),
// default profiles, consistency checks. It prints the resulting project as JSON and
// exits 1 on any error. Built from the Go module proxy by tests/containers at test time.
//
//	composecheck -f compose.yaml -f compose.local.yaml [-profile NAME]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

type names []string

func (n *names) String() string     { return strings.Join(*n, ",") }
func (n *names) Set(v string) error { *n = append(*n, v); return nil }

func main() {
	var files, profiles names
	flag.Var(&files, "f", "compose file (repeat; later files override earlier ones)")
	flag.Var(&profiles, "profile", "profile to enable (repeat)")
	flag.Parse()
	if len(files) == 0 {
		fmt.Fprintln(os.Stderr, "composecheck: give at least one -f FILE")
		os.Exit(2)
	}
	options, err := cli.NewProjectOptions(files,
		cli.WithOsEnv,
		cli.WithDotEnv,
		cli.WithDefaultProfiles(profiles...),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		fail(err)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fail(err)
	}
	os.Stdout.Write(append(out, '\n'))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "composecheck:", err)
	os.Exit(1)
}
