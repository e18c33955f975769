import { useChat } from '@ai-sdk/react';
import { DefaultChatTransport, type UIMessage } from 'ai';
import { type FormEvent, useEffect, useMemo, useRef, useState } from 'react';

// Where ngai_chat's blueprint is mounted: this origin by default (`npm run dev`
// proxies /chat to `make run`); `?api=http://host:port` or VITE_NGAI_URL otherwise.
const params = new URLSearchParams(window.location.search);
const BASE = (params.get('api') ?? import.meta.env.VITE_NGAI_URL ?? '').replace(/\/+$/, '');
const API = `${BASE}/chat`;
// The model to ask (the server's NGAI_DEFAULT_MODEL when absent).
const MODEL = params.get('model') ?? undefined;
const STORAGE_KEY = 'ngai-react-chat';

type Saved = { id: string; messages: UIMessage[] };

function newId(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) =>
    b.toString(16).padStart(2, '0'),
  ).join('');
}

function load(): Saved {
  try {
    const saved = JSON.parse(localStorage.getItem(STORAGE_KEY) ?? 'null');
    if (saved && typeof saved.id === 'string' && Array.isArray(saved.messages)) return saved;
  } catch {
    // unreadable: start a new chat
  }
  return { id: newId(), messages: [] };
}

export function App() {
  const [saved] = useState(load);
  const transport = useMemo(
    () => new DefaultChatTransport({ api: API, body: MODEL ? { model: MODEL } : undefined }),
    [],
  );
  const { messages, sendMessage, status, stop, error } = useChat({
    id: saved.id,
    messages: saved.messages,
    transport,
    // after a reload, GET /chat/<id>/stream replays the running answer from its start
    resume: true,
  });

  useEffect(() => {
    // Keep the finished messages. An answer still streaming is left out: after a
    // reload the resumed stream replays it whole, so it must not be there twice.
    const last = messages.at(-1);
    const streaming = status === 'streaming' || status === 'submitted';
    const keep = streaming && last?.role === 'assistant' ? messages.slice(0, -1) : messages;
    try {
      localStorage.setItem(STORAGE_KEY, JSON.stringify({ id: saved.id, messages: keep }));
    } catch {
      // over the storage quota (big attachments): the chat still works, unsaved
    }
  }, [messages, status, saved.id]);

  function onStop() {
    stop(); // drops the connection (the SDK's stop)...
    // ...and this stops the answer itself: the server closes the upstream request
    void fetch(`${API}/${saved.id}/stream`, { method: 'DELETE' });
  }

  function onNewChat() {
    onStop();
    localStorage.removeItem(STORAGE_KEY);
    window.location.reload();
  }

  const [input, setInput] = useState('');
  const [files, setFiles] = useState<FileList | undefined>(undefined);
  const fileInput = useRef<HTMLInputElement>(null);
  const busy = status === 'submitted' || status === 'streaming';

  function onSubmit(event: FormEvent) {
    event.preventDefault();
    if (busy || (!input.trim() && !files?.length)) return;
    // attachments go as `file` parts (data URLs): images and PDFs
    void sendMessage({ text: input, files });
    setInput('');
    setFiles(undefined);
    if (fileInput.current) fileInput.current.value = '';
  }

  return (
    <main>
      <header>
        <h1>ngai_chat · useChat</h1>
        <button type="button" onClick={onNewChat}>
          New chat
        </button>
      </header>
      <section id="messages">
        {messages.map((message) => (
          <Message key={message.id} message={message} />
        ))}
      </section>
      {error && <p className="error">{error.message}</p>}
      <form onSubmit={onSubmit}>
        <textarea
          id="input"
          value={input}
          placeholder="Ask something"
          onChange={(event) => setInput(event.target.value)}
          onKeyDown={(event) => {
            if (event.key === 'Enter' && !event.shiftKey) onSubmit(event);
          }}
        />
        <input
          id="files"
          ref={fileInput}
          type="file"
          multiple
          accept="image/png,image/jpeg,image/webp,image/gif,application/pdf"
          onChange={(event) => setFiles(event.target.files ?? undefined)}
        />
        {busy ? (
          <button id="stop" type="button" onClick={onStop}>
            Stop
          </button>
        ) : (
          <button id="send" type="submit">
            Send
          </button>
        )}
      </form>
      <p id="status" data-status={status}>
        {status}
      </p>
    </main>
  );
}

type Metadata = { model?: string; usage?: { total_tokens?: number; cost?: number } | null };

function Message({ message }: { message: UIMessage }) {
  const metadata = (message.metadata ?? {}) as Metadata;
  return (
    <article className={`message ${message.role}`} data-role={message.role}>
      {message.parts.map((part, index) => {
        switch (part.type) {
          case 'text':
            return (
              <div key={index} className="text">
                {part.text}
              </div>
            );
          case 'reasoning':
            return (
              <details key={index} className="reasoning" open={part.state === 'streaming'}>
                <summary>Thinking</summary>
                <div className="reasoning-text">{part.text}</div>
              </details>
            );
          case 'source-url':
            return (
              <a key={index} className="source" href={part.url} target="_blank" rel="noreferrer">
                {part.title ?? part.url}
              </a>
            );
          case 'file':
            return part.mediaType.startsWith('image/') ? (
              <img key={index} className="image" src={part.url} alt={part.filename ?? 'image'} />
            ) : (
              <a key={index} className="attachment" href={part.url} download={part.filename}>
                {part.filename ?? part.mediaType}
              </a>
            );
          case 'step-start':
            return null;
          default:
            if (part.type === 'dynamic-tool' || part.type.startsWith('tool-')) {
              const tool = part as { type: string; toolName?: string; state: string; input?: unknown };
              const name = tool.toolName ?? tool.type.slice('tool-'.length);
              return (
                <div key={index} className="tool" data-state={tool.state}>
                  <code>
                    {name}({JSON.stringify(tool.input ?? {})})
                  </code>
                </div>
              );
            }
            return null;
        }
      })}
      {message.role === 'assistant' && metadata.model && (
        <footer className="meta">
          {metadata.model}
          {metadata.usage?.total_tokens != null && ` · ${metadata.usage.total_tokens} tokens`}
          {metadata.usage?.cost != null && ` · $${metadata.usage.cost}`}
        </footer>
      )}
    </article>
  );
}
