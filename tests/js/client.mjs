// The Vercel AI SDK, unchanged, with baseURL pointed at Tally.
// usage: node client.mjs <baseURL> <apiKey> <generate|stream> <user> [chat|responses]
// With TALLY_USER_TOKEN set, it goes in the X-Tally-User-Token header (createOpenAI's
// `headers` option), as a browser frontend sends its signed-in user's session token.
// "chat" uses provider.chat(model) (Chat Completions); "responses" the provider's
// default, provider(model), which calls the Responses API.
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText } from "ai";

const [baseURL, apiKey, mode, user, api = "chat"] = process.argv.slice(2);
const token = process.env.TALLY_USER_TOKEN;
const headers = token ? { "X-Tally-User-Token": token } : undefined;
const provider = createOpenAI({ baseURL, apiKey, headers });
const request = {
  model: api === "responses" ? provider("openai/gpt-4o-mini") : provider.chat("openai/gpt-4o-mini"),
  prompt: "Hi there",
  providerOptions: { openai: { user } },
};

if (mode === "stream") {
  const errors = [];
  const result = streamText({ ...request, onError: ({ error }) => errors.push(String(error?.message ?? JSON.stringify(error))) });
  const parts = [];
  for await (const part of result.textStream) parts.push(part);
  console.log(JSON.stringify({ parts, usage: await result.usage, finishReason: await result.finishReason, errors }));
} else {
  const result = await generateText(request);
  console.log(JSON.stringify({ text: result.text, usage: result.usage, finishReason: result.finishReason }));
}
