"""sdlab's HTTP API through the official `openai` Python client.

Usage: python openai_client.py BASE_URL MODEL API_KEY

BASE_URL ends in /v1. Run by server/tests/openai_client.rs against a server
on the synthetic model; exits non-zero (with a traceback) on any mismatch.
"""

import sys

import openai


def param_of(e: openai.APIStatusError):
    body = e.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    return body.get("param") if isinstance(body, dict) else None


def main() -> None:
    base_url, model, api_key = sys.argv[1], sys.argv[2], sys.argv[3]
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=60)
    greedy = {"temperature": 0, "extra_body": {"ignore_eos": True}}

    models = client.models.list()
    assert [m.id for m in models.data] == [model], models

    # A completion.
    cmpl = client.completions.create(model=model, prompt="The quick brown fox", max_tokens=12, **greedy)
    assert cmpl.object == "text_completion", cmpl
    assert cmpl.model == model, cmpl
    assert len(cmpl.choices) == 1 and cmpl.choices[0].index == 0, cmpl
    assert cmpl.choices[0].finish_reason == "length", cmpl
    assert isinstance(cmpl.choices[0].text, str) and cmpl.choices[0].text, cmpl
    u = cmpl.usage
    assert u.completion_tokens == 12 and u.prompt_tokens > 0, u
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens, u

    # The same completion streamed.
    text = ""
    for chunk in client.completions.create(
        model=model, prompt="The quick brown fox", max_tokens=12, stream=True, **greedy
    ):
        assert chunk.object == "text_completion", chunk
        text += chunk.choices[0].text
    assert text == cmpl.choices[0].text, (text, cmpl.choices[0].text)

    # A chat completion.
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    chat = client.chat.completions.create(model=model, messages=messages, max_tokens=16, **greedy)
    assert chat.object == "chat.completion", chat
    msg = chat.choices[0].message
    assert msg.role == "assistant" and isinstance(msg.content, str) and msg.content, chat
    assert chat.choices[0].finish_reason == "length", chat
    assert chat.usage.completion_tokens == 16, chat.usage
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + 16, chat.usage

    # The same chat streamed, with usage at the end.
    pieces, roles, usage, finish = [], [], None, None
    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
        **greedy,
    )
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk", chunk
        if chunk.usage is not None:
            assert chunk.choices == [], chunk
            usage = chunk.usage
            continue
        delta = chunk.choices[0].delta
        if delta.role:
            roles.append(delta.role)
        if delta.content:
            pieces.append(delta.content)
        if chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert roles == ["assistant"], roles
    assert "".join(pieces) == msg.content, ("".join(pieces), msg.content)
    assert finish == "length", finish
    assert usage is not None and usage.completion_tokens == 16, usage
    assert usage.prompt_tokens == chat.usage.prompt_tokens, usage

    # Errors arrive as the client's typed exceptions.
    try:
        client.chat.completions.create(model="no-such-model", messages=messages, max_tokens=2)
        raise AssertionError("unknown model accepted")
    except openai.NotFoundError as e:
        assert e.status_code == 404, e
    try:
        client.completions.create(model=model, prompt="hi", max_tokens=2, temperature=-1)
        raise AssertionError("temperature -1 accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and param_of(e) == "temperature", e.body
    bad_key = openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0)
    try:
        bad_key.models.list()
        raise AssertionError("wrong API key accepted")
    except openai.AuthenticationError as e:
        assert e.status_code == 401, e

    print("openai client: all checks passed")


if __name__ == "__main__":
    main()
