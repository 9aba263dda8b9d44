package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"reflect"
	"strings"

	"github.com/acttail/acttail-gpu/runtime/sample"
)

// request is the body of /v1/completions and /v1/chat/completions, as
// OpenAI names the fields; fields this server does not use are ignored.
type request struct {
	Model       string          `json:"model"`
	Prompt      json.RawMessage `json:"prompt"`   // completions: string or [string]
	Messages    []message       `json:"messages"` // chat
	MaxTokens   *int            `json:"max_tokens"`
	MaxCompl    *int            `json:"max_completion_tokens"` // chat's newer name for max_tokens
	Temperature *float64        `json:"temperature"`
	TopP        *float64        `json:"top_p"`
	Seed        *int64          `json:"seed"`
	Stop        json.RawMessage `json:"stop"` // string or [string]
	N           *int            `json:"n"`
	Stream      bool            `json:"stream"`
	StreamOpts  *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	// Logprobs is, for completions, how many alternatives to report
	// beside each token (0..5); for chat, whether to report logprobs.
	Logprobs    json.RawMessage `json:"logprobs"`
	TopLogprobs *int            `json:"top_logprobs"` // chat: alternatives (0..20)
}

// message is one chat turn; content is a string or a list of text parts.
type message struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// text returns the message's content as one string.
func (m message) text() (string, error) {
	if s, ok, err := stringOrList(m.Content, "content"); err != nil || ok {
		return strings.Join(s, ""), err
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(m.Content, &parts); err != nil {
		return "", badParam("messages", "content must be a string or a list of text parts")
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type != "text" {
			return "", badParam("messages", fmt.Sprintf("content part of type %q is not supported", p.Type))
		}
		b.WriteString(p.Text)
	}
	return b.String(), nil
}

// stringOrList decodes a JSON string, or a list of strings; ok is false
// when raw is absent or null.
func stringOrList(raw json.RawMessage, param string) (list []string, ok bool, err error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, false, nil
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}, true, nil
	}
	if raw[0] == '[' && json.Unmarshal(raw, &list) == nil {
		return list, true, nil
	}
	if param == "content" {
		return nil, false, nil // may be a list of parts; the caller tries that
	}
	return nil, false, badParam(param, param+" must be a string or a list of strings")
}

// params are a request's checked generation parameters.
type params struct {
	sample    sample.Options
	maxTokens int
	setMax    bool // max_tokens was given (else maxTokens is the default)
	stops     []string
	logprobs  int // alternatives to report beside each token; -1: no logprobs
}

// Most alternatives a request may ask for beside each token, as OpenAI
// allows.
const (
	maxLogprobs     = 5  // completions' logprobs
	maxTopLogprobs  = 20 // chat's top_logprobs
	logprobsMissing = -1
)

// params checks the sampling fields of a completions request (chat false)
// or a chat one; limit and def are max_tokens' bound and default.
func (r *request) params(limit, def int, chat bool) (params, error) {
	p := params{maxTokens: def, sample: sample.Options{TopP: 1, Seed: rand.Uint64()}, logprobs: logprobsMissing}
	if r.N != nil && *r.N != 1 {
		return p, badParam("n", "only n=1 is supported")
	}
	mt, mtName := r.MaxTokens, "max_tokens"
	if mt == nil {
		mt, mtName = r.MaxCompl, "max_completion_tokens"
	}
	if mt != nil {
		if *mt <= 0 || *mt > limit {
			return p, badParam(mtName, fmt.Sprintf("%s %d must be between 1 and %d", mtName, *mt, limit))
		}
		p.maxTokens, p.setMax = *mt, true
	}
	if t := r.Temperature; t != nil {
		if !(*t >= 0 && *t <= 2) {
			return p, badParam("temperature", "temperature must be between 0 and 2")
		}
		p.sample.Temperature = *t
	}
	if tp := r.TopP; tp != nil {
		if !(*tp > 0 && *tp <= 1) {
			return p, badParam("top_p", "top_p must be in (0, 1]")
		}
		p.sample.TopP = *tp
	}
	if r.Seed != nil {
		p.sample.Seed = uint64(*r.Seed)
	}
	stops, _, err := stringOrList(r.Stop, "stop")
	if err != nil {
		return p, err
	}
	for _, s := range stops {
		if s != "" {
			p.stops = append(p.stops, s)
		}
	}
	if chat {
		p.logprobs, err = r.chatLogprobs()
	} else {
		p.logprobs, err = r.completionLogprobs()
	}
	return p, err
}

// completionLogprobs reads completions' logprobs: null, or an integer
// 0..maxLogprobs.
func (r *request) completionLogprobs() (int, error) {
	if r.TopLogprobs != nil {
		return 0, badParam("top_logprobs", "top_logprobs is a chat parameter; completions take logprobs: an integer")
	}
	if isNull(r.Logprobs) {
		return logprobsMissing, nil
	}
	var n int
	if err := json.Unmarshal(r.Logprobs, &n); err != nil {
		return 0, typeError("logprobs", "an integer", r.Logprobs)
	}
	if n < 0 || n > maxLogprobs {
		return 0, badParam("logprobs", fmt.Sprintf("logprobs %d must be between 0 and %d", n, maxLogprobs))
	}
	return n, nil
}

// chatLogprobs reads chat's logprobs (a bool) and top_logprobs (an
// integer 0..maxTopLogprobs, which needs logprobs true).
func (r *request) chatLogprobs() (int, error) {
	on := false
	if !isNull(r.Logprobs) {
		if err := json.Unmarshal(r.Logprobs, &on); err != nil {
			return 0, typeError("logprobs", "a boolean", r.Logprobs)
		}
	}
	n := 0
	if r.TopLogprobs != nil {
		n = *r.TopLogprobs
		switch {
		case !on:
			return 0, badParam("top_logprobs", "top_logprobs needs logprobs: true")
		case n < 0 || n > maxTopLogprobs:
			return 0, badParam("top_logprobs", fmt.Sprintf("top_logprobs %d must be between 0 and %d", n, maxTopLogprobs))
		}
	}
	if !on {
		return logprobsMissing, nil
	}
	return n, nil
}

func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || bytes.Equal(raw, []byte("null"))
}

// apiError is an error answered as OpenAI's error JSON.
type apiError struct {
	status  int
	message string
	typ     string
	param   string // "": null
	code    string // "": null
}

func (e *apiError) Error() string { return e.message }

func badParam(param, msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, message: msg, typ: "invalid_request_error", param: param, code: "invalid_value"}
}

// typeError is a parameter of the wrong JSON type (OpenAI's invalid_type):
// want names the type it should have, got is what came.
func typeError(param, want string, got json.RawMessage) *apiError {
	kind := "a string"
	switch g := bytes.TrimSpace(got); {
	case len(g) == 0:
		kind = "nothing"
	case g[0] == '{':
		kind = "an object"
	case g[0] == '[':
		kind = "an array"
	case g[0] == 't' || g[0] == 'f':
		kind = "a boolean"
	case g[0] == 'n':
		kind = "null"
	case g[0] == '-' || g[0] >= '0' && g[0] <= '9':
		kind = "the number " + string(g)
		if len(kind) > 40 {
			kind = kind[:40] + "…"
		}
	}
	return &apiError{status: http.StatusBadRequest, typ: "invalid_request_error", param: param, code: "invalid_type",
		message: fmt.Sprintf("invalid type for '%s': expected %s, but got %s", param, want, kind)}
}

// errorBody is the JSON of an error reply.
type errorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func (e *apiError) body() errorBody {
	var b errorBody
	b.Error.Message, b.Error.Type = e.message, e.typ
	if e.param != "" {
		b.Error.Param = &e.param
	}
	if e.code != "" {
		b.Error.Code = &e.code
	}
	return b
}

// asAPIError maps any error to the reply it deserves.
func asAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return &apiError{status: http.StatusRequestEntityTooLarge, typ: "invalid_request_error", code: "request_too_large",
			message: fmt.Sprintf("request body is larger than %d bytes", tooBig.Limit)}
	}
	return &apiError{status: http.StatusInternalServerError, message: err.Error(), typ: "server_error"}
}

// decodeBody reads the JSON body of r, at most max bytes. A value of the
// wrong type is a typed parameter error (the body is well-formed JSON); a
// body that stops arriving (the read deadline) is 408.
func decodeBody(w http.ResponseWriter, r *http.Request, max int64, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, max))
	if err := dec.Decode(v); err != nil {
		return bodyError(err)
	}
	// Anything after the object but space is malformed too; reading it
	// also enforces the size limit on trailing bytes.
	if _, err := dec.Token(); err == nil {
		return &apiError{status: http.StatusBadRequest, typ: "invalid_request_error", code: "invalid_json",
			message: "malformed JSON body: data after the object"}
	} else if err != io.EOF {
		return bodyError(err)
	}
	return nil
}

// bodyError maps an error reading or decoding a request body.
func bodyError(err error) error {
	var typeErr *json.UnmarshalTypeError
	var netErr net.Error
	switch {
	case errors.As(err, new(*http.MaxBytesError)):
		return err
	case errors.As(err, &netErr) && netErr.Timeout():
		return &apiError{status: http.StatusRequestTimeout, typ: "invalid_request_error", code: "request_timeout",
			message: "the request body did not arrive in time"}
	case errors.As(err, &typeErr):
		param := typeErr.Field
		if param == "" {
			return &apiError{status: http.StatusBadRequest, typ: "invalid_request_error", code: "invalid_json",
				message: fmt.Sprintf("the body must be a JSON object, not %s", typeErr.Value)}
		}
		return &apiError{status: http.StatusBadRequest, typ: "invalid_request_error", param: param, code: "invalid_type",
			message: fmt.Sprintf("invalid type for '%s': expected %s, but got %s", param, jsonKind(typeErr.Type), typeErr.Value)}
	}
	return &apiError{status: http.StatusBadRequest, typ: "invalid_request_error", code: "invalid_json",
		message: "malformed JSON body: " + err.Error()}
}

// jsonKind names the JSON value a Go type decodes from.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "a boolean"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "an object"
}

// completion is a non-streamed reply, and (with Object ".chunk" and
// deltas) a streamed chunk; the choice fields differ by endpoint.
type completion struct {
	ID      string   `json:"id"`
	Object  string   `json:"object"`
	Created int64    `json:"created"`
	Model   string   `json:"model"`
	Choices []choice `json:"choices"`
	Usage   *usage   `json:"usage,omitempty"`
}

type choice struct {
	Index        int      `json:"index"`
	Text         *string  `json:"text,omitempty"`    // completions
	Message      *chatMsg `json:"message,omitempty"` // chat
	Delta        *chatMsg `json:"delta,omitempty"`   // chat stream
	Logprobs     any      `json:"logprobs"`          // nil, *completionLogprobs or *chatLogprobs
	FinishReason *string  `json:"finish_reason"`
}

type chatMsg struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}
