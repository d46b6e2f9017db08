// GET /metrics (Prometheus text format) on every node's API: an admin or a pull token
// (Authorization: Bearer …, Prometheus's `authorization` / `bearer_token_file`).
import type { ApiServer } from '../api/server.js';
import { OmniError } from '../errors.js';
import type { NodeMetrics } from './node-metrics.js';

export function registerMetricsRoute(api: ApiServer, metrics: NodeMetrics): void {
  api.onRequest = (method, status, ms) => metrics.observeRequest(method, status, ms);
  api.route(
    'GET',
    /^\/metrics$/,
    async (req, _url, _params, res) => {
      if (!(await api.tokenRole(req, ['admin', 'pull']))) {
        throw new OmniError('UNAUTHORIZED', req.headers.authorization ? 'invalid token for /metrics (an admin or a pull token)' : 'missing token (Authorization: Bearer <admin or pull token>; omni token create --role pull)');
      }
      const { text, contentType } = await metrics.render();
      res.writeHead(200, { 'content-type': contentType, 'content-length': Buffer.byteLength(text) });
      res.end(text);
      return undefined;
    },
    true,
  );
}
