#!/bin/sh
# Exec counter for specs: `exec_counter.sh COUNT_FILE CMD...` appends one line to COUNT_FILE, then runs CMD.
# Used as a cmd: provider prefix, so every command ferry sends to the sandbox is counted.
count_file=$1
shift
echo exec >> "$count_file"
exec "$@"
