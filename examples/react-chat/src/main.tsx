import { createRoot } from 'react-dom/client';
import { App } from './App';
import './app.css';

// No <StrictMode>: in development it runs effects twice, and useChat's resume is an
// effect (it would open two resumed streams).
createRoot(document.getElementById('root')!).render(<App />);
