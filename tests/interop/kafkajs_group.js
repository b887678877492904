// kafkajs consumes a topic through a consumer group and commits what it read.
//
//   node kafkajs_group.js BROKER TOPIC GROUP COUNT
//
// Prints one JSON line: {"consumed": [[partition, offset], ...], "committed": {partition: offset}},
// the committed offsets as kafkajs's admin client reads them back (OffsetFetch).
const { Kafka, logLevel } = require("kafkajs");

async function main() {
  const [broker, topic, groupId, countArg] = process.argv.slice(2);
  const want = Number(countArg);
  const kafka = new Kafka({ clientId: "faultline-kafkajs", brokers: [broker], logLevel: logLevel.WARN });
  const consumer = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 1000 });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  const consumed = [];
  const next = {};
  await new Promise((resolve, reject) => {
    consumer
      .run({
        autoCommit: false,
        eachMessage: async ({ partition, message }) => {
          consumed.push([partition, Number(message.offset)]);
          next[partition] = Number(message.offset) + 1;
          if (consumed.length >= want) resolve();
        },
      })
      .catch(reject);
  });
  await consumer.commitOffsets(
    Object.entries(next).map(([partition, offset]) => ({ topic, partition: Number(partition), offset: String(offset) })),
  );
  await consumer.disconnect();
  const admin = kafka.admin();
  await admin.connect();
  const fetched = await admin.fetchOffsets({ groupId, topics: [topic] });
  await admin.disconnect();
  const committed = {};
  for (const t of fetched) for (const p of t.partitions) committed[p.partition] = Number(p.offset);
  console.log(JSON.stringify({ consumed, committed }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
