package cli

import (
	"cmp"
	"fmt"
	"runtime"
	"runtime/debug"
)

// Commit is the commit the binary was built from, set with -ldflags "-X
// github.com/spillway-io/spillway/cli.Commit=..." where the build has no
// VCS information (a container build without .git); otherwise Go's build
// info gives it.
var Commit = ""

// releaseVersion is Version when stamped, else the main module's version
// from the build info, else "(devel)".
func releaseVersion() string {
	v := Version
	if bi, ok := debug.ReadBuildInfo(); ok {
		v = cmp.Or(v, bi.Main.Version)
	}
	return cmp.Or(v, "(devel)")
}

// versionLine is what `spillway version` prints: the release (Version, or
// the main module's version), the commit it was built from (with
// "-modified" when the tree had changes) and the Go version, as the build
// info records them.
func versionLine() string {
	version, commit, modified := Version, cmp.Or(Commit, "unknown"), false
	if bi, ok := debug.ReadBuildInfo(); ok {
		version = cmp.Or(version, bi.Main.Version)
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = cmp.Or(Commit, s.Value)
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if modified {
		commit += "-modified"
	}
	return fmt.Sprintf("spillway %s (commit %s, %s %s/%s)", cmp.Or(version, "(devel)"), commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
