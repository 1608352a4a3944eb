package main

import (
	"io"
	"log/slog"
	"strings"
	"testing"
)

func TestRunNeedsConfigAndKey(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := run("127.0.0.1:0", "", log, nil); err == nil || !strings.Contains(err.Error(), "--config") {
		t.Fatalf("want a --config error, got %v", err)
	}
	t.Setenv("STRATA_ECS_ACCESS_KEY_ID", "")
	if err := run("127.0.0.1:0", "example.json", log, nil); err == nil || !strings.Contains(err.Error(), "STRATA_ECS_ACCESS_KEY_ID") {
		t.Fatalf("want a key error, got %v", err)
	}
}

func TestNodeFlags(t *testing.T) {
	n := nodeFlags{}
	if err := n.Set("i-1=stabc-cloud1"); err != nil || n["i-1"] != "stabc-cloud1" {
		t.Fatalf("%v %v", n, err)
	}
	if err := n.Set("nonsense"); err == nil {
		t.Fatal("want an error for a value without =")
	}
}
