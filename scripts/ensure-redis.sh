#!/usr/bin/env bash
# Make sure a Redis answers on 127.0.0.1:6379 (tests that need Redis use a real one).
set -euo pipefail
ping_redis() { (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && head -c 5 <&3 | grep -q PONG) 2>/dev/null; }
if ping_redis; then exit 0; fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found; installing Debian's redis-server" >&2
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq redis-server >/dev/null; fi
fi
mkdir -p /tmp/molfusion-redis
redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
  --dir /tmp/molfusion-redis --logfile /tmp/molfusion-redis/redis.log
for _ in $(seq 1 50); do ping_redis && exit 0; sleep 0.1; done
echo "Redis did not come up on 127.0.0.1:6379" >&2
exit 1
