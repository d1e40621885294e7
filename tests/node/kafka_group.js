// tests/node/kafka_group.js - consumer groups with kafkajs against plexmqd
// (run by tests/integration/kafka_group.sh and kafka_restart.sh).
//
//   KAFKA_BROKER=127.0.0.1:PORT node kafka_group.js MODE
//
// MODE "group":   two members of one group together receive every message
//                 exactly once; when one leaves, the other gets all
//                 partitions and continues; a new member resumes from the
//                 committed offsets; the group goes Empty; a new group
//                 replays from the beginning; ListGroups and DescribeGroups.
// MODE "commit":  (before a restart) produce 10 records, consume them in
//                 group "gr", commit, leave.
// MODE "resume":  (after a restart) the committed offsets are still there;
//                 a new member of "gr" gets only what was produced after;
//                 a new group replays all of it.
//
// Prints "ok MODE" and exits 0, or prints the failure and exits 1.
'use strict'
process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1'
const { Kafka, logLevel } = require('kafkajs')

const broker = process.env.KAFKA_BROKER
const mode = process.argv[2]
if (!broker || !mode) {
  console.error('usage: KAFKA_BROKER=host:port node kafka_group.js MODE')
  process.exit(2)
}

const kafka = new Kafka({
  clientId: 'kafka-group-test',
  brokers: [broker],
  logLevel: logLevel.WARN,
  connectionTimeout: 3000,
  requestTimeout: 10000,
  retry: { retries: 8, initialRetryTime: 100, maxRetryTime: 1000 },
})

// Whole-run bound: the shell wrapper also kills us after 50 s.
const deadline = setTimeout(() => fail(new Error('timed out after 45 s')), 45000)
const cleanups = []

function fail (e) {
  console.error('FAIL (' + mode + '):', e && e.stack ? e.stack : e)
  process.exit(1)
}

function assert (cond, what) {
  if (!cond) throw new Error('assertion failed: ' + what)
}

// Poll cond() every 50 ms until it is true or ms pass.
async function waitFor (what, ms, cond) {
  const end = Date.now() + ms
  for (;;) {
    if (await cond()) return
    if (Date.now() > end) throw new Error('timed out waiting for ' + what)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

// A group member that records what it receives and its assignments.
async function member (name, groupId, topic) {
  const c = kafka.consumer({
    groupId,
    sessionTimeout: 10000,
    rebalanceTimeout: 10000,
    heartbeatInterval: 500,
    maxWaitTimeInMs: 250,
    retry: { retries: 8, initialRetryTime: 100, maxRetryTime: 1000 },
  })
  const m = { name, c, got: [], joins: [], assigned: null, running: true }
  c.on(c.events.GROUP_JOIN, e => {
    m.assigned = (e.payload.memberAssignment[topic] || []).slice().sort()
    m.joins.push({ at: Date.now(), assigned: m.assigned })
  })
  await c.connect()
  cleanups.push(() => c.disconnect().catch(() => {}))
  await c.subscribe({ topic, fromBeginning: true })
  await c.run({
    eachMessage: async ({ partition, message }) => {
      m.got.push({ partition, offset: Number(message.offset),
        value: message.value.toString() })
    },
  })
  return m
}

async function leave (m) {
  await m.c.disconnect()
  m.running = false
}

// Every value once in total, none missing.
function checkExactlyOnce (what, values, expected) {
  const seen = new Map()
  for (const v of values) seen.set(v, (seen.get(v) || 0) + 1)
  const dups = [...seen].filter(([, n]) => n > 1).map(([v]) => v)
  assert(dups.length === 0, what + ': duplicates ' + dups.join(','))
  const missing = expected.filter(v => !seen.has(v))
  assert(missing.length === 0, what + ': missing ' + missing.join(','))
  const extra = [...seen.keys()].filter(v => !expected.includes(v))
  assert(extra.length === 0, what + ': unexpected ' + extra.join(','))
}

async function produce (producer, topic, from, to, partitions) {
  const messages = []
  for (let i = from; i < to; i++) {
    messages.push({ key: 'k' + i, value: 'v' + i,
      partition: i % partitions, headers: { seq: String(i) } })
  }
  await producer.send({ topic, messages })
  const vals = []
  for (let i = from; i < to; i++) vals.push('v' + i)
  return vals
}

// Wait until the group has committed, for every partition, the end offset.
async function waitCommitted (admin, groupId, topic, ms) {
  await waitFor('commits of ' + groupId + ' to reach the end of ' + topic, ms,
    async () => {
      const ends = await admin.fetchTopicOffsets(topic)
      const [res] = await admin.fetchOffsets({ groupId, topics: [topic] })
      return ends.every(e => {
        const p = res.partitions.find(x => x.partition === e.partition)
        return p && p.offset === e.high
      })
    })
}

async function modeGroup () {
  const topic = 'grp'
  const P = 3
  const admin = kafka.admin()
  await admin.connect()
  cleanups.push(() => admin.disconnect())
  assert(await admin.createTopics({ topics: [{ topic, numPartitions: P }] }),
    'topic grp created')
  const producer = kafka.producer()
  await producer.connect()
  cleanups.push(() => producer.disconnect())

  // ---- two members share the partitions ----
  const a = await member('a', 'g1', topic)
  const b = await member('b', 'g1', topic)
  await waitFor('two members with complementary assignments', 20000, () => {
    if (!a.assigned || !b.assigned) return false
    if (a.assigned.length === 0 || b.assigned.length === 0) return false
    const all = [...a.assigned, ...b.assigned].sort()
    return JSON.stringify(all) === JSON.stringify([0, 1, 2])
  })
  const first = await produce(producer, topic, 0, 30, P)
  await waitFor('30 records received by the group', 15000,
    () => a.got.length + b.got.length >= 30)
  checkExactlyOnce('two members', [...a.got, ...b.got].map(x => x.value), first)
  assert(a.got.length > 0 && b.got.length > 0, 'both members received records')
  for (const m of [a, b]) {
    for (const r of m.got) {
      assert(m.assigned.includes(r.partition),
        m.name + ' got partition ' + r.partition + ' not assigned to it')
    }
  }
  const groups = await admin.listGroups()
  assert(groups.groups.some(g => g.groupId === 'g1'), 'ListGroups lists g1')
  const desc = await admin.describeGroups(['g1'])
  const g1 = desc.groups.find(g => g.groupId === 'g1')
  assert(g1 && g1.state === 'Stable', 'g1 Stable: ' + JSON.stringify(g1 && g1.state))
  assert(g1.members.length === 2, 'g1 has 2 members: ' + g1.members.length)
  assert(g1.protocolType === 'consumer', 'protocol type consumer')
  await waitCommitted(admin, 'g1', topic, 10000)

  // ---- b leaves: a takes every partition and goes on ----
  const t0 = Date.now()
  const aJoins = a.joins.length
  await leave(b)
  await waitFor('a to get all partitions after b left', 15000, () =>
    a.joins.length > aJoins &&
    JSON.stringify(a.assigned) === JSON.stringify([0, 1, 2]))
  const took = Date.now() - t0
  // LeaveGroup rebalances at once: well below the 10 s session timeout.
  assert(took < 4000, 'rebalance after LeaveGroup took ' + took + ' ms')
  const aBefore = a.got.length
  const second = await produce(producer, topic, 30, 60, P)
  await waitFor('a to receive the 30 new records', 15000,
    () => a.got.length - aBefore >= 30)
  checkExactlyOnce('after the rebalance', a.got.slice(aBefore).map(x => x.value),
    second)
  checkExactlyOnce('first 60 overall', [...a.got, ...b.got].map(x => x.value),
    [...first, ...second])
  await waitCommitted(admin, 'g1', topic, 10000)
  await leave(a)

  // ---- the group is empty; a new member resumes from the commits ----
  const third = await produce(producer, topic, 60, 70, P)
  const d = await member('d', 'g1', topic)
  await waitFor('d to receive the 10 records produced while g1 was empty',
    15000, () => d.got.length >= 10)
  checkExactlyOnce('resume from committed offsets', d.got.map(x => x.value), third)
  await waitCommitted(admin, 'g1', topic, 10000)
  await leave(d)

  // ---- the group goes Empty (kafka_group.sh then commits standalone) ----
  await waitFor('g1 to be Empty', 10000, async () => {
    const r = await admin.describeGroups(['g1'])
    return r.groups[0].state === 'Empty'
  })

  // ---- a new group replays from the beginning ----
  const n = await member('n', 'g2', topic)
  await waitFor('the new group to replay all 70 records', 15000,
    () => n.got.length >= 70)
  checkExactlyOnce('new group replay', n.got.map(x => x.value),
    [...first, ...second, ...third])
  // ...in offset order within each partition, starting at 0.
  for (let p = 0; p < P; p++) {
    const offs = n.got.filter(x => x.partition === p).map(x => x.offset)
    offs.forEach((o, i) => assert(o === i, 'g2 partition ' + p + ' offsets ' + offs))
  }
  await leave(n)
}

async function modeCommit () {
  const topic = 'rst'
  const admin = kafka.admin()
  await admin.connect()
  cleanups.push(() => admin.disconnect())
  await admin.createTopics({ topics: [{ topic, numPartitions: 2 }] })
  const producer = kafka.producer()
  await producer.connect()
  cleanups.push(() => producer.disconnect())
  const vals = await produce(producer, topic, 0, 10, 2)
  const m = await member('m', 'gr', topic)
  await waitFor('gr to receive 10 records', 15000, () => m.got.length >= 10)
  checkExactlyOnce('before the restart', m.got.map(x => x.value), vals)
  await waitCommitted(admin, 'gr', topic, 10000)
  await leave(m)
}

async function modeResume () {
  const topic = 'rst'
  const admin = kafka.admin()
  await admin.connect()
  cleanups.push(() => admin.disconnect())
  const ends = await admin.fetchTopicOffsets(topic)
  const total = ends.reduce((s, e) => s + Number(e.high), 0)
  assert(total === 10, 'the 10 records survived the restart: ' + JSON.stringify(ends))
  const [fo] = await admin.fetchOffsets({ groupId: 'gr', topics: [topic] })
  for (const e of ends) {
    const p = fo.partitions.find(x => x.partition === e.partition)
    assert(p && p.offset === e.high, 'committed offset of partition ' +
      e.partition + ' survived: ' + JSON.stringify(fo))
  }
  const producer = kafka.producer()
  await producer.connect()
  cleanups.push(() => producer.disconnect())
  const newer = await produce(producer, topic, 10, 15, 2)
  const m = await member('m', 'gr', topic)
  await waitFor('gr to receive the 5 new records', 15000, () => m.got.length >= 5)
  checkExactlyOnce('resume after the restart', m.got.map(x => x.value), newer)
  await leave(m)
  const n = await member('n', 'gr-new', topic)
  await waitFor('a new group to replay 15 records', 15000, () => n.got.length >= 15)
  const all = []
  for (let i = 0; i < 15; i++) all.push('v' + i)
  checkExactlyOnce('new group after the restart', n.got.map(x => x.value), all)
  await leave(n)
}

const modes = { group: modeGroup, commit: modeCommit, resume: modeResume }
if (!modes[mode]) {
  console.error('unknown mode ' + mode)
  process.exit(2)
}
modes[mode]().then(async () => {
  for (const f of cleanups.reverse()) await f()
  clearTimeout(deadline)
  console.log('ok ' + mode)
  process.exit(0)
}, fail)
