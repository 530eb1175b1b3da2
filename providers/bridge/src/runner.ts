// How a command runs on the Sandbox SDK. The SDK's exec takes one shell string, has no stdin, and hands output
// over as decoded text, so bytes would be mangled. A small Perl program (perl-base is in every Debian/Ubuntu
// image, the SDK's included) runs the command instead: it forks it in a process group of its own with stdin
// from the staged chunk files, reads its stdout and stderr as they come, and prints one ASCII line per read:
//   p<pid>             the command's pid (its process group: a kill goes to the group)
//   o<base64> / e<base64>   bytes the command wrote to stdout / stderr
//   x<code> <signal number> <timed out 0|1>   the end
// It also enforces the timeout (TERM to the group, KILL after the grace period), like ferry's proc.run.
// Only Perl's builtins (no module: loading POSIX alone would cost 10 ms a command; base64 comes from
// pack "u", the clock from /proc/uptime).

const RUNNER = `
use strict;
my ($timeout_ms, $grace_ms, $cwd, @argv) = @ARGV;
$| = 1;
sub now { if (open(my $f, "<", "/proc/uptime")) { my $l = <$f>; return $1 if $l =~ /^([0-9.]+)/ } return time }
sub b64 { my $s = pack("u", $_[0]); $s =~ s/^.//mg; $s =~ tr/\n//d; $s =~ tr|\` -_|AA-Za-z0-9+/|;
  my $p = (3 - length($_[0]) % 3) % 3; substr($s, -$p) = "=" x $p if $p; return $s }
pipe(my $or, my $ow) or die "pipe: $!"; pipe(my $er, my $ew) or die "pipe: $!";
my $pid = fork(); defined $pid or die "fork: $!";
if (!$pid) {
  setpgrp(0, 0); close $or; close $er;
  open(STDOUT, ">&", $ow) or exit 126; open(STDERR, ">&", $ew) or exit 126;
  close $ow; close $ew;
  chdir($cwd) or do { print STDERR "cd $cwd: $!\n"; exit 1 };
  { no warnings; exec { $argv[0] } @argv; }
  print STDERR "$argv[0]: $!\n"; exit($!{ENOENT} ? 127 : 126);
}
close $ow; close $ew;
print "p$pid\n";
my %fh = (o => $or, e => $er);
my $deadline = $timeout_ms > 0 ? now() + $timeout_ms / 1000 : undef;
my ($timed_out, $status) = (0, undef);
while (%fh or !defined $status) {
  my $left = defined $deadline ? $deadline - now() : undef;
  if (defined $left and $left <= 0) {
    if (!$timed_out) { $timed_out = 1; kill "TERM", -$pid; $deadline = now() + $grace_ms / 1000 }
    else { kill "KILL", -$pid; $deadline = undef }
    next;
  }
  if (%fh) {
    my $rin = ""; vec($rin, fileno($fh{$_}), 1) = 1 for keys %fh;
    my $n = select(my $rout = $rin, undef, undef, $left);
    next if $n <= 0;
    for my $tag (keys %fh) {
      next unless vec($rout, fileno($fh{$tag}), 1);
      my $got = sysread($fh{$tag}, my $buf, 65536);
      if ($got) { print $tag, b64($buf), "\n" }
      elsif (defined $got or !$!{EINTR}) { close $fh{$tag}; delete $fh{$tag} }
    }
  } else {
    my $r = waitpid($pid, defined $deadline ? 1 : 0); # 1: WNOHANG
    if ($r == $pid) { $status = $? }
    elsif (defined $deadline) { select(undef, undef, undef, $left < 0.05 ? $left : 0.05) }
  }
}
my $sig = $status & 127;
print "x", ($sig ? 128 + $sig : $status >> 8), " $sig $timed_out\n";
`;

/** A word for sh: single-quoted. */
export function shellQuote(s: string): string {
  return "'" + s.replace(/'/g, "'\\''") + "'";
}

export interface RunnerCommand {
  argv: string[];
  cwd: string;
  timeoutMs: number;
  graceMs: number;
  /** The staged stdin chunk files, in order; null: no stdin (/dev/null). */
  stdinFiles: string[] | null;
  /** Removed once the command ended (the staged chunks). */
  stagingDir?: string;
}

/** The shell string the SDK runs for a command. */
export function runnerCommand(c: RunnerCommand): string {
  const run = ["perl", "-e", shellQuote(RUNNER), "--", String(c.timeoutMs), String(c.graceMs), shellQuote(c.cwd),
    ...c.argv.map(shellQuote)].join(" ");
  const files = c.stdinFiles ?? [];
  const fed = files.length > 0 ? `cat -- ${files.map(shellQuote).join(" ")} 2>/dev/null | ${run}` : `${run} < /dev/null`;
  return c.stagingDir ? `{ ${fed}; }; rm -rf -- ${shellQuote(c.stagingDir)}` : fed;
}

/** One line of the runner's output. */
export type RunnerLine =
  | { kind: "pid"; pid: number }
  | { kind: "o" | "e"; data: string }
  | { kind: "exit"; code: number; signal: number; timedOut: boolean }
  | { kind: "other"; text: string };

export function parseRunnerLine(line: string): RunnerLine {
  const tag = line[0];
  if (tag === "o" || tag === "e") return { kind: tag, data: line.slice(1) };
  let m = /^p(\d+)$/.exec(line);
  if (m) return { kind: "pid", pid: Number(m[1]) };
  m = /^x(\d+) (\d+) ([01])$/.exec(line);
  if (m) return { kind: "exit", code: Number(m[1]), signal: Number(m[2]), timedOut: m[3] === "1" };
  return { kind: "other", text: line };
}
