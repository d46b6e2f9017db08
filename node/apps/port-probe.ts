// Before the agent starts a task it checks that the task's host ports are free on this host:
// a port still held by another process (an orphan of a killed omnid, a foreign service) would
// only make the task crash-loop on "address already in use". Binding the IPv4 wildcard fails
// with EADDRINUSE whatever address the holder listens on (127.0.0.1, 0.0.0.0 or dual-stack ::).
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';

/** How long one probe may take before the port is assumed free (never blocks a start for long). */
export const PORT_PROBE_TIMEOUT_MS = 2000;

function inUse(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    const timer = setTimeout(() => {
      server.close();
      resolve(false);
    }, PORT_PROBE_TIMEOUT_MS);
    server.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(err.code === 'EADDRINUSE'); // EACCES (privileged port), EAFNOSUPPORT: let the driver try
    });
    server.listen({ port, host: '0.0.0.0', exclusive: true }, () => {
      clearTimeout(timer);
      server.close(() => resolve(false));
    });
  });
}

/** Whether a UDP port is bound on this host (IPv4 wildcard, as for TCP). */
function udpInUse(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    s.once('error', (err: NodeJS.ErrnoException) => {
      s.close();
      resolve(err.code === 'EADDRINUSE');
    });
    s.bind({ port, address: '0.0.0.0', exclusive: true }, () => s.close(() => resolve(false)));
  });
}

/** The ports among `ports` that some process on this host already listens on (`isUdp(i)`: the i-th is a UDP port). */
export async function portsInUse(ports: readonly number[], isUdp: (index: number) => boolean = () => false): Promise<number[]> {
  const busy = await Promise.all(ports.map((p, i) => (p > 0 ? (isUdp(i) ? udpInUse(p) : inUse(p)) : Promise.resolve(false))));
  return ports.filter((_, i) => busy[i]);
}
