//go:build tools

// Package tools records the main packages this module builds.
package tools

import (
	_ "github.com/Project-HAMi/HAMi/cmd/scheduler"
)
