// Live resource use of a VM or container: sampled from /instances/{ref}/stats every 2 s and
// drawn as small line charts of the last two minutes.
import { useEffect, useState } from "react";
import { api, q } from "../api/client";
import type { Stats } from "../api/types";
import { bytes } from "../format";
import { ErrorBox } from "./ui";

const KEEP = 60;

function Chart({ values, max, label }: { values: number[]; max: number; label: string }) {
  const top = Math.max(max, ...values, 1);
  const shown = values.length === 1 ? [values[0], values[0]] : values; // one sample: a level line
  const points = shown.map((v, i) => `${(i / (KEEP - 1)) * 100},${100 - (v / top) * 100}`).join(" ");
  return (
    <svg className="chart" viewBox="0 0 100 100" preserveAspectRatio="none" role="img" aria-label={label}>
      <polyline points={points} />
    </svg>
  );
}

export function Metrics({ instance, running }: { instance: string; running: boolean }) {
  const [samples, setSamples] = useState<Stats[]>([]);
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    if (!running) return;
    let stop = false;
    const read = async () => {
      try {
        const s = await api.get<Stats>(`/instances/${q(instance)}/stats`);
        if (!stop) setSamples((all) => [...all.slice(-(KEEP - 1)), s]);
        setError(null);
      } catch (err) {
        if (!stop) setError(err);
      }
    };
    void read();
    const id = setInterval(read, 2000);
    return () => {
      stop = true;
      clearInterval(id);
    };
  }, [instance, running]);

  if (!running) return <p className="muted">Metrics are read while it runs.</p>;
  const last = samples[samples.length - 1];
  const rate = (key: keyof Stats) => {
    if (samples.length < 2) return [];
    return samples.slice(1).map((s, i) => {
      const prev = samples[i];
      const secs = (new Date(s.read_at).getTime() - new Date(prev.read_at).getTime()) / 1000 || 1;
      return Math.max(0, ((s[key] as number) - (prev[key] as number)) / secs);
    });
  };
  const rx = rate("network_rx_bytes");
  const tx = rate("network_tx_bytes");
  const rd = rate("block_read_bytes");
  const wr = rate("block_write_bytes");
  return (
    <div>
      <ErrorBox error={error} />
      {last && (
        <div className="cards two" data-testid="metrics">
          <section className="card">
            <h3>CPU <span className="muted">{last.cpu_percent.toFixed(1)} % of {last.online_cpus} vCPU</span></h3>
            <Chart values={samples.map((s) => s.cpu_percent)} max={100} label="CPU use" />
          </section>
          <section className="card">
            <h3>Memory <span className="muted">{bytes(last.memory_bytes)} of {bytes(last.memory_limit_bytes)}</span></h3>
            <Chart values={samples.map((s) => s.memory_bytes)} max={last.memory_limit_bytes} label="Memory use" />
          </section>
          <section className="card">
            <h3>Network <span className="muted">↓ {bytes(rx[rx.length - 1] ?? 0)}/s ↑ {bytes(tx[tx.length - 1] ?? 0)}/s</span></h3>
            <Chart values={rx.map((v, i) => v + (tx[i] ?? 0))} max={1024} label="Network traffic" />
          </section>
          <section className="card">
            <h3>Disk <span className="muted">read {bytes(rd[rd.length - 1] ?? 0)}/s · write {bytes(wr[wr.length - 1] ?? 0)}/s</span></h3>
            <Chart values={rd.map((v, i) => v + (wr[i] ?? 0))} max={1024} label="Disk traffic" />
          </section>
        </div>
      )}
    </div>
  );
}
