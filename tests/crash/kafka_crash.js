// tests/crash/kafka_crash.js - kafkajs clients for crash_kafka.sh
// (docs/crash-testing.md), run with the pinned kafkajs of tests/node.
//
//   KAFKA_BROKER=host:port node kafka_crash.js produce FIRST STATE
//     An idempotent producer (acks = all, one request in flight, as kafkajs
//     requires for idempotence) sends records "k<seq>" from FIRST on, to
//     topic "idem" partition seq % 2, 20 per request, until the broker
//     goes away (the test kills it) or 30 s pass.  It appends to STATE
//     "sent N" before each request and "acked A B" (the request's first and
//     last seq) after each acknowledgement, and touches STATE.ready at the
//     first one.  Exits 0 when the broker went away, 1 on any other error.
//   KAFKA_BROKER=host:port node kafka_crash.js commit GROUP
//     Joins GROUP, consumes "idem" from the start until it has at least 50
//     records of each partition, commits the next offsets explicitly and
//     prints "committed PARTITION OFFSET" lines once the commit is acked.
//   KAFKA_BROKER=host:port node kafka_crash.js fetch GROUP
//     Prints GROUP's committed offsets of "idem": "committed PARTITION OFFSET".
'use strict'
process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1'
const fs = require('fs')
const path = require('path')
const { Kafka, logLevel } = require(path.join(process.env.KAFKA_NODE_DIR ||
  path.join(__dirname, '..', 'node'), 'node_modules', 'kafkajs'))

const broker = process.env.KAFKA_BROKER
const mode = process.argv[2]
const TOPIC = 'idem'
const PER_REQUEST = 20
const RUN_LIMIT_MS = 30000

function fail (e) {
  console.error('FAIL (' + mode + '):', e && e.stack ? e.stack : e)
  process.exit(1)
}

const kafka = new Kafka({
  clientId: 'crash-kafka',
  brokers: [broker],
  logLevel: logLevel.NOTHING,
  connectionTimeout: 2000,
  requestTimeout: 10000,
  // Few retries: after a kill the producer ends within about a second
  // instead of waiting for the restart (a new round starts a new one).
  retry: { retries: 2, initialRetryTime: 100, maxRetryTime: 300 }
})

// A connection error means the broker went away: the expected end.
function brokerGone (e) {
  for (let x = e; x; x = x.originalError || x.cause) {
    const n = x.name || ''
    const m = String(x.message || '')
    if (n === 'KafkaJSConnectionError' || n === 'KafkaJSConnectionClosedError' ||
        n === 'KafkaJSRequestTimeoutError' || /ECONNREFUSED|ECONNRESET|Closed connection|Connection error|EPIPE|timed out/i.test(m)) return true
    if (n === 'KafkaJSNumberOfRetriesExceeded' && x.retryCount !== undefined && !x.originalError) return true
  }
  return false
}

async function produce (first, state) {
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 })
  await producer.connect()
  const end = Date.now() + RUN_LIMIT_MS
  let seq = first
  let ready = false
  try {
    while (Date.now() < end) {
      const msgs = []
      for (let i = 0; i < PER_REQUEST; i++, seq++) {
        msgs.push({ partition: seq % 2, value: 'k' + seq })
      }
      fs.appendFileSync(state, 'sent ' + (seq - 1) + '\n')
      await producer.send({ topic: TOPIC, acks: -1, messages: msgs })
      fs.appendFileSync(state, 'acked ' + (seq - PER_REQUEST) + ' ' + (seq - 1) + '\n')
      if (!ready) {
        fs.writeFileSync(state + '.ready', '')
        ready = true
      }
    }
  } catch (e) {
    if (!brokerGone(e)) fail(e)
    fs.appendFileSync(state, 'end ' + (e.name || 'error') + '\n')
    process.exit(0)
  }
  fs.appendFileSync(state, 'end time\n')
  await producer.disconnect()
}

async function commit (group) {
  const consumer = kafka.consumer({ groupId: group, sessionTimeout: 6000, heartbeatInterval: 500 })
  await consumer.connect()
  await consumer.subscribe({ topic: TOPIC, fromBeginning: true })
  const next = {}
  let done
  const finished = new Promise(resolve => { done = resolve })
  await consumer.run({
    autoCommit: false,
    eachBatch: async ({ batch }) => {
      for (const m of batch.messages) next[batch.partition] = Number(m.offset) + 1
      if ((next[0] || 0) >= 50 && (next[1] || 0) >= 50) done()
    }
  })
  const t = setTimeout(() => fail(new Error('fewer than 50 records per partition within 20 s')), 20000)
  await finished
  clearTimeout(t)
  await consumer.commitOffsets([0, 1].map(p => ({ topic: TOPIC, partition: p, offset: String(next[p]) })))
  for (const p of [0, 1]) console.log('committed ' + p + ' ' + next[p])
  // No disconnect: the broker is killed with the group still alive.
  process.exit(0)
}

async function fetch (group) {
  const admin = kafka.admin()
  await admin.connect()
  const r = await admin.fetchOffsets({ groupId: group, topics: [TOPIC] })
  const parts = r[0].partitions.slice().sort((a, b) => a.partition - b.partition)
  for (const p of parts) console.log('committed ' + p.partition + ' ' + p.offset)
  await admin.disconnect()
}

const deadline = setTimeout(() => fail(new Error('timed out after 45 s')), 45000)
deadline.unref()
let run
if (mode === 'produce') run = produce(Number(process.argv[3]), process.argv[4])
else if (mode === 'commit') run = commit(process.argv[3])
else if (mode === 'fetch') run = fetch(process.argv[3])
else fail(new Error('unknown mode'))
run.then(() => process.exit(0), fail)
