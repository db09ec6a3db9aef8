import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The build lands inside the Python package, so `pip install` ships it and `cloudlet server`
// serves it at /. `npm run dev` proxies the API to a server on the default port.
export default defineConfig({
  plugins: [react()],
  build: {
    outDir: "../cloudlet/dashboard",
    emptyOutDir: true,
    target: "es2022", // noVNC uses top-level await
    manifest: true,
    chunkSizeWarningLimit: 700,
  },
  server: {
    proxy: {
      "/api": { target: "http://127.0.0.1:8470", ws: true },
    },
  },
});
