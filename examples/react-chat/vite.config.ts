import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

// `npm run dev` proxies /chat to ngai_chat (`make run` serves it on port 3000), so the
// page and the API share an origin. NGAI_URL points it elsewhere.
const target = process.env.NGAI_URL ?? 'http://127.0.0.1:3000';

export default defineConfig({
  plugins: [react()],
  base: './',
  server: { proxy: { '/chat': target } },
  preview: { proxy: { '/chat': target } },
});
