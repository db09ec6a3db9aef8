import { useEffect, useState, type FormEvent } from "react";
import { api } from "../api/client";
import { ErrorBox, Field } from "../components/ui";
import { useSession } from "../session";
import { useAction } from "../hooks";

/** Where the OpenID Connect sign-in returns to: it hands the page a token pair in the URL
 * fragment, which the server turns into a cookie session (spending the pair). */
export const OIDC_LANDING = "/login/oidc";

export function OidcLanding() {
  const { refresh } = useSession();
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    const fields = new URLSearchParams(window.location.hash.slice(1));
    window.history.replaceState(null, "", window.location.pathname); // the tokens leave the address bar
    const token = fields.get("refresh_token");
    if (!token) {
      setError(new Error("The sign-in returned no session."));
      return;
    }
    api
      .post("/auth/session/adopt", { refresh_token: token })
      .then(() => refresh())
      .catch(setError);
  }, [refresh]);
  return (
    <main className="login">
      <div className="panel">
        {error ? <ErrorBox error={error} /> : <p aria-live="polite">Signing in…</p>}
        {error ? <a href="/login">Back to sign-in</a> : null}
      </div>
    </main>
  );
}

export function Login() {
  const { signIn } = useSession();
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const { busy, error, run } = useAction();
  const [oidc, setOidc] = useState<{ enabled: boolean; issuer: string | null } | null>(null);
  useEffect(() => {
    api.get<{ enabled: boolean; issuer: string | null }>("/auth/oidc/config").then(setOidc, () => setOidc(null));
  }, []);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    await run(async () => {
      await signIn(username, password);
    });
  };

  return (
    <main className="login">
      <form onSubmit={submit} aria-label="Sign in">
        <h1>cloudlet</h1>
        <p className="muted">Sign in to your private cloud.</p>
        <Field label="Username">
          <input name="username" autoComplete="username" autoFocus required value={username} onChange={(e) => setUsername(e.target.value)} />
        </Field>
        <Field label="Password">
          <input name="password" type="password" autoComplete="current-password" required value={password} onChange={(e) => setPassword(e.target.value)} />
        </Field>
        <ErrorBox error={error} />
        <button type="submit" className="primary" disabled={busy}>{busy ? "Signing in…" : "Sign in"}</button>
        <p className="muted small">
          No account yet? On the server, <code>cloudlet admin create-user NAME --admin</code> makes one.
        </p>
        {oidc?.enabled && (
          <a className="button sso" href={`/api/v1/auth/oidc/login?redirect=${encodeURIComponent(OIDC_LANDING)}`}>
            Sign in with {oidc.issuer ? new URL(oidc.issuer).host : "single sign-on"}
          </a>
        )}
      </form>
    </main>
  );
}
