package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
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
	stops     []string
}

// params checks the sampling fields; limit and def are max_tokens' bound
// and default.
func (r *request) params(limit, def int) (params, error) {
	p := params{maxTokens: def, sample: sample.Options{TopP: 1, Seed: rand.Uint64()}}
	if r.N != nil && *r.N != 1 {
		return p, badParam("n", "only n=1 is supported")
	}
	mt := r.MaxTokens
	if mt == nil {
		mt = r.MaxCompl
	}
	if mt != nil {
		if *mt <= 0 || *mt > limit {
			return p, badParam("max_tokens", fmt.Sprintf("max_tokens %d must be between 1 and %d", *mt, limit))
		}
		p.maxTokens = *mt
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
	return p, nil
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
	return &apiError{status: http.StatusBadRequest, message: msg, typ: "invalid_request_error", param: param}
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

// decodeBody reads the JSON body of r, at most max bytes.
func decodeBody(w http.ResponseWriter, r *http.Request, max int64, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, max))
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return err
		}
		return &apiError{status: http.StatusBadRequest, typ: "invalid_request_error", code: "invalid_json",
			message: "malformed JSON body: " + err.Error()}
	}
	// Anything after the object but space is malformed too; reading it
	// also enforces the size limit on trailing bytes.
	if _, err := dec.Token(); err == nil {
		return &apiError{status: http.StatusBadRequest, typ: "invalid_request_error", code: "invalid_json",
			message: "malformed JSON body: data after the object"}
	} else if errors.As(err, new(*http.MaxBytesError)) {
		return err
	}
	return nil
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
	Index        int       `json:"index"`
	Text         *string   `json:"text,omitempty"`    // completions
	Message      *chatMsg  `json:"message,omitempty"` // chat
	Delta        *chatMsg  `json:"delta,omitempty"`   // chat stream
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
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
