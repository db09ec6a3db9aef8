// Following the long-running operations the API answers changes with (202 + an operation).
import { api, ApiError, q } from "./client";
import type { Operation } from "./types";
import { opLabel } from "../format";

export function isFinal(op: Operation): boolean {
  return op.status === "succeeded" || op.status === "failed";
}

/** Read ``op`` again until it ends (the server holds each read up to 10 s); ``onUpdate`` sees
 * every reading, for progress. The ended operation comes back, failed or not. */
export async function settled(op: Operation, onUpdate?: (op: Operation) => void): Promise<Operation> {
  let current = op;
  while (!isFinal(current)) {
    current = await api.get<Operation>(`/operations/${q(current.id)}?wait=10`);
    onUpdate?.(current);
  }
  return current;
}

/** As ``settled``, but a failed operation is thrown as the problem it ended with. */
export async function succeeded(op: Operation, onUpdate?: (op: Operation) => void): Promise<Operation> {
  const done = await settled(op, onUpdate);
  if (done.status === "failed") {
    const error = done.error ?? {};
    throw new ApiError(error.status ?? 500, error.code ?? "operation_failed", `${opLabel(done.kind)} failed`, error.detail ?? done.message ?? "");
  }
  return done;
}
