// The Vercel AI SDK, unchanged, with baseURL pointed at Tally.
// usage: node client.mjs <baseURL> <apiKey> <generate|stream> <user>
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText } from "ai";

const [baseURL, apiKey, mode, user] = process.argv.slice(2);
const provider = createOpenAI({ baseURL, apiKey });
const request = {
  model: provider.chat("openai/gpt-4o-mini"),
  prompt: "Hi there",
  providerOptions: { openai: { user } },
};

if (mode === "stream") {
  const result = streamText(request);
  const parts = [];
  for await (const part of result.textStream) parts.push(part);
  console.log(JSON.stringify({ parts, usage: await result.usage, finishReason: await result.finishReason }));
} else {
  const result = await generateText(request);
  console.log(JSON.stringify({ text: result.text, usage: result.usage, finishReason: result.finishReason }));
}
