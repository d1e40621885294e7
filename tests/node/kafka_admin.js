// tests/node/kafka_admin.js - CreateTopics and DeleteTopics with the
// kafkajs admin client against plexmqd (run by kafka_admin.sh, with
// auto_create_topics = false so that only CreateTopics makes topics).
//
//   KAFKA_BROKER=127.0.0.1:PORT node kafka_admin.js
//
// Prints "ok admin" and exits 0, or prints the failure and exits 1.
'use strict'
process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1'
const { Kafka, logLevel } = require('kafkajs')

const broker = process.env.KAFKA_BROKER
if (!broker) {
  console.error('usage: KAFKA_BROKER=host:port node kafka_admin.js')
  process.exit(2)
}
const kafka = new Kafka({
  clientId: 'kafka-admin-test',
  brokers: [broker],
  logLevel: logLevel.ERROR,
  connectionTimeout: 3000,
  requestTimeout: 10000,
  retry: { retries: 2, initialRetryTime: 100, maxRetryTime: 500 },
})
const deadline = setTimeout(() => fail(new Error('timed out after 45 s')), 45000)

function fail (e) {
  console.error('FAIL (admin):', e && e.stack ? e.stack : e)
  process.exit(1)
}
function assert (cond, what) {
  if (!cond) throw new Error('assertion failed: ' + what)
}
// The error type of a rejected promise (kafkajs wraps per-topic errors).
async function errorType (p) {
  try {
    await p
  } catch (e) {
    if (e.errors && e.errors.length) return e.errors[0].type
    if (e.cause && e.cause.type) return e.cause.type
    return e.type || e.name || String(e)
  }
  return null
}

async function main () {
  const admin = kafka.admin()
  await admin.connect()

  // ---- CreateTopics ----
  assert(await admin.createTopics({
    topics: [{ topic: 'c1', numPartitions: 4 }, { topic: 'c2', numPartitions: 1 }],
  }) === true, 'createTopics c1, c2 returns true')
  let names = await admin.listTopics()
  assert(names.includes('c1') && names.includes('c2'), 'listTopics: ' + names)
  let md = await admin.fetchTopicMetadata({ topics: ['c1'] })
  assert(md.topics[0].partitions.length === 4,
    'c1 has 4 partitions: ' + JSON.stringify(md.topics[0].partitions))
  // Creating it again: TOPIC_ALREADY_EXISTS, which kafkajs turns into false.
  assert(await admin.createTopics({ topics: [{ topic: 'c1', numPartitions: 4 }] }) === false,
    'createTopics c1 again returns false')
  // Zero partitions: INVALID_PARTITIONS, and no topic.
  const t0 = await errorType(admin.createTopics({ topics: [{ topic: 'c0', numPartitions: 0 }] }))
  assert(t0 === 'INVALID_PARTITIONS', 'numPartitions 0: ' + t0)
  // An illegal name: INVALID_TOPIC_EXCEPTION.
  const tn = await errorType(admin.createTopics({ topics: [{ topic: 'bad/name', numPartitions: 1 }] }))
  assert(tn === 'INVALID_TOPIC_EXCEPTION', 'topic bad/name: ' + tn)
  names = await admin.listTopics()
  assert(!names.includes('c0') && !names.includes('bad/name'), 'no c0, bad/name: ' + names)

  // The new topic takes records in its last partition.
  const producer = kafka.producer({ allowAutoTopicCreation: false })
  await producer.connect()
  const [res] = await producer.send({ topic: 'c1', messages: [{ value: 'x', partition: 3 }] })
  assert(res.errorCode === 0 && res.partition === 3 && res.baseOffset === '0',
    'produce to c1/3: ' + JSON.stringify(res))
  let offs = await admin.fetchTopicOffsets('c1')
  assert(offs.find(o => o.partition === 3).high === '1', 'c1/3 high 1: ' + JSON.stringify(offs))

  // ---- DeleteTopics ----
  await admin.deleteTopics({ topics: ['c1'] })
  names = await admin.listTopics()
  assert(!names.includes('c1') && names.includes('c2'), 'after delete: ' + names)
  const td = await errorType(admin.deleteTopics({ topics: ['never-was'] }))
  assert(td === 'UNKNOWN_TOPIC_OR_PARTITION', 'delete never-was: ' + td)

  // ---- created again: empty, with the new partition count ----
  assert(await admin.createTopics({ topics: [{ topic: 'c1', numPartitions: 2 }] }) === true,
    'c1 created again')
  md = await admin.fetchTopicMetadata({ topics: ['c1'] })
  assert(md.topics[0].partitions.length === 2, 'c1 has 2 partitions now')
  offs = await admin.fetchTopicOffsets('c1')
  assert(offs.every(o => o.high === '0' && o.low === '0'), 'c1 is empty: ' + JSON.stringify(offs))
  const [res2] = await producer.send({ topic: 'c1', messages: [{ value: 'y', partition: 1 }] })
  assert(res2.errorCode === 0 && res2.baseOffset === '0', 'produce to new c1: ' + JSON.stringify(res2))

  await producer.disconnect()
  await admin.disconnect()
}

main().then(() => {
  clearTimeout(deadline)
  console.log('ok admin')
  process.exit(0)
}, fail)
