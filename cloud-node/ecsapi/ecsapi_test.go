package ecsapi

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	sdkerrors "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"
)

func TestConfigErrors(t *testing.T) {
	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "RegionID") {
		t.Fatalf("want a RegionID error, got %v", err)
	}
	if _, err := New(Config{RegionID: "cn-hangzhou"}); err == nil || !strings.Contains(err.Error(), "AccessKeyID") {
		t.Fatalf("want a credentials error, got %v", err)
	}
}

func TestCredentialsNeverPrinted(t *testing.T) {
	c := Credentials{AccessKeyID: "LTAI-x", AccessKeySecret: "s3cr3t", SecurityToken: "tok3n"}
	for _, s := range []string{c.String(), fmt.Sprint(c), fmt.Sprintf("%v %+v", c, c)} {
		if strings.Contains(s, "s3cr3t") || strings.Contains(s, "tok3n") {
			t.Fatalf("credentials printed: %s", s)
		}
	}
}

func TestTransportErrorsAreRedactedAndRetried(t *testing.T) {
	c, err := New(Config{RegionID: "cn-hangzhou", Endpoint: "http://127.0.0.1:1",
		Credentials: Credentials{AccessKeyID: "LTAI-x", AccessKeySecret: "s3cr3t", SecurityToken: "tok3n"},
		Timeout:     time.Second, MaxAttempts: 3, BackoffBase: time.Millisecond, BackoffMax: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.DescribeENIs(context.Background(), Filter{})
	if err == nil {
		t.Fatal("want a connection error")
	}
	if strings.Contains(err.Error(), "tok3n") || strings.Contains(err.Error(), "Signature=") && !strings.Contains(err.Error(), "Signature=REDACTED") {
		t.Fatalf("secret in error text: %v", err)
	}
	if c.Calls() != 3 {
		t.Fatalf("a refused connection is retryable: want 3 attempts, got %d", c.Calls())
	}
}

func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{sdkerrors.NewServerError(400, `{"Code":"Throttling","Message":"x"}`, ""), true},
		{sdkerrors.NewServerError(400, `{"Code":"Throttling.User","Message":"x"}`, ""), true},
		{sdkerrors.NewServerError(503, `{"Code":"ServiceUnavailable","Message":"x"}`, ""), true},
		{sdkerrors.NewServerError(403, `{"Code":"EniPerInstanceLimitExceeded","Message":"x"}`, ""), false},
		{sdkerrors.NewServerError(404, `{"Code":"InvalidEniId.NotFound","Message":"x"}`, ""), false},
		{sdkerrors.NewServerError(400, `{"Code":"SignatureDoesNotMatch","Message":"x"}`, ""), false},
		{sdkerrors.NewClientError(sdkerrors.TimeoutErrorCode, "timeout", nil), true},
		{&url.Error{Op: "Post", URL: "http://x", Err: errors.New("reset")}, true},
		{errors.New("instance type not found"), false},
	} {
		if got := Retryable(tc.err); got != tc.want {
			t.Errorf("Retryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestPerActionRateLimit(t *testing.T) {
	c, err := New(Config{RegionID: "cn-hangzhou", Endpoint: "http://127.0.0.1:1",
		Credentials: Credentials{AccessKeyID: "a", AccessKeySecret: "b"}, MaxAttempts: 1,
		Limits: map[string]Limit{"DeleteNetworkInterface": {QPS: 0.001, Burst: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_ = c.DeleteENI(ctx, "eni-1") // spends the only token (the call itself fails: nothing listens)
	err = c.DeleteENI(ctx, "eni-2")
	if err == nil || !strings.Contains(err.Error(), "rate limit") {
		t.Fatalf("second call within the bucket's refill should wait for the limiter, got %v", err)
	}
	if c.Calls() != 1 {
		t.Fatalf("the limited call was sent anyway: %d calls", c.Calls())
	}
	// another action has its own bucket
	_, err = c.DescribeENIs(context.Background(), Filter{})
	if err != nil && strings.Contains(err.Error(), "rate limit") {
		t.Fatalf("DescribeNetworkInterfaces shares DeleteNetworkInterface's bucket: %v", err)
	}
}
