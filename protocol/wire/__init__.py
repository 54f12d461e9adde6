"""Every wire format relaybox speaks, as pure encoders and decoders: OpenAI's chat completions,
Anthropic's Messages, Gemini, Ollama, the CLIs' prompts and stream-json, SSE framing."""
