package server

import (
	"fmt"
	"strings"

	"github.com/acttail/acttail-gpu/runtime/tokenizer"
)

// chatFormat is how chat messages become a prompt. The vocab's chat
// template is a Jinja program; rather than run Jinja, the server knows the
// common formats and recognizes them by their markers in the template.
type chatFormat int

const (
	// plainChat is "role: content" lines, then "assistant:"; no special
	// tokens. Used when the vocab has no template or one not recognized.
	plainChat chatFormat = iota
	// llama2Chat is "[INST] … [/INST]" turns, each after BOS, an assistant
	// turn ending in EOS; the system message in a <<SYS>> block at the
	// start of the first user turn (Llama-2), or, when the template has
	// no <<SYS>>, prepended to the first user message (Mistral).
	llama2Chat
	llama2ChatNoSys
	// llama3Chat is "<|start_header_id|>role<|end_header_id|>\n\n" content
	// "<|eot_id|>" per message, then the assistant header.
	llama3Chat
)

// detectChat picks the format of a chat template.
func detectChat(template string) chatFormat {
	switch {
	case strings.Contains(template, "<|start_header_id|>"):
		return llama3Chat
	case strings.Contains(template, "[INST]") && strings.Contains(template, "<<SYS>>"):
		return llama2Chat
	case strings.Contains(template, "[INST]"):
		return llama2ChatNoSys
	}
	return plainChat
}

// turn is a checked chat message.
type turn struct{ role, content string }

// chatTurns checks the roles and flattens the contents of msgs.
func chatTurns(msgs []message) ([]turn, error) {
	if len(msgs) == 0 {
		return nil, badParam("messages", "messages must not be empty")
	}
	turns := make([]turn, len(msgs))
	for i, m := range msgs {
		role := m.Role
		switch role {
		case "developer":
			role = "system"
		case "system", "user", "assistant":
		default:
			return nil, badParam(fmt.Sprintf("messages[%d].role", i), fmt.Sprintf("role %q: want system, user or assistant", m.Role))
		}
		text, err := m.text()
		if err != nil {
			return nil, err
		}
		turns[i] = turn{role, text}
	}
	return turns, nil
}

// renderChat writes the turns in format f, without the leading BOS (the
// encoder adds it); bos and eos are the vocab's token strings.
func renderChat(f chatFormat, turns []turn, bos, eos string) string {
	var b strings.Builder
	switch f {
	case llama3Chat:
		for _, t := range turns {
			fmt.Fprintf(&b, "<|start_header_id|>%s<|end_header_id|>\n\n%s<|eot_id|>", t.role, strings.TrimSpace(t.content))
		}
		b.WriteString("<|start_header_id|>assistant<|end_header_id|>\n\n")
	case llama2Chat, llama2ChatNoSys:
		var system string
		first := true
		for _, t := range turns {
			switch t.role {
			case "system":
				system = strings.TrimSpace(t.content)
			case "user":
				if !first {
					b.WriteString(bos)
				}
				content := strings.TrimSpace(t.content)
				if system != "" {
					if f == llama2Chat {
						content = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content
					} else {
						content = system + "\n\n" + content
					}
					system = ""
				}
				fmt.Fprintf(&b, "[INST] %s [/INST]", content)
				first = false
			case "assistant":
				fmt.Fprintf(&b, " %s %s", strings.TrimSpace(t.content), eos)
				first = false
			}
		}
	default:
		for _, t := range turns {
			fmt.Fprintf(&b, "%s: %s\n", t.role, t.content)
		}
		b.WriteString("assistant:")
	}
	return b.String()
}

// chatPrompt encodes msgs for tok's vocab.
func chatPrompt(tok *tokenizer.Tokenizer, msgs []message) ([]int, error) {
	turns, err := chatTurns(msgs)
	if err != nil {
		return nil, err
	}
	v := tok.Vocab()
	f := detectChat(v.ChatTemplate)
	text := renderChat(f, turns, tok.Piece(v.BOS), tok.Piece(v.EOS))
	if f == plainChat {
		return tok.Encode(text, true), nil
	}
	return tok.EncodeSpecial(text, true), nil
}
