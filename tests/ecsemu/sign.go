package ecsemu

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/url"
	"strings"
)

// StringToSign builds the RPC (signature version 1.0) string to sign from
// every request parameter except Signature, the way ECS does: sorted
// url-encoding, POP percent-encoding fixes, then escaped again.
func StringToSign(method string, params url.Values) string {
	p := url.Values{}
	for k, vs := range params {
		if k == "Signature" {
			continue
		}
		for _, v := range vs {
			p.Add(k, v)
		}
	}
	s := p.Encode()
	s = strings.ReplaceAll(s, "+", "%20")
	s = strings.ReplaceAll(s, "*", "%2A")
	s = strings.ReplaceAll(s, "%7E", "~")
	return method + "&%2F&" + url.QueryEscape(s)
}

// Sign computes the signature of stringToSign with secret.
func Sign(stringToSign, secret string) string {
	m := hmac.New(sha1.New, []byte(secret+"&"))
	m.Write([]byte(stringToSign))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}
