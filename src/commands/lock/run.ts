import * as Flags from '@oclif/core/flags'

import {refuseStray, splitAtDashes} from '../../argv.js'
import {DlqCommand} from '../../base.js'
import {conflictFlag, keyFlag, limitFlag, nonblockFlag, sharedFlag, ttlFlag, waitFlag} from '../../lockflags.js'
import {lockRun} from '../../lockrun.js'

export default class LockRun extends DlqCommand {
  static summary = 'Run a command while holding a lock.'
  static description = `Waits for the lock KEY (up to --wait), runs COMMAND without a shell while renewing the lease every ttl/3, and releases the lock once COMMAND has exited. dlq exits with COMMAND's exit code (128+N if a signal N killed it), 75 (--conflict-exit-code) if the lock was not acquired in time, and 70 if the lock was lost while COMMAND ran: then every process of COMMAND got SIGTERM, and SIGKILL after --kill-grace.

COMMAND runs in dlq's own process group and session, as under flock: it keeps the terminal, so /dev/tty prompts (sudo, ssh, gpg) work, Ctrl-C reaches it (once), and Ctrl-Z suspends dlq and COMMAND together until fg. A suspended job's lease is renewed once, then not again: resume it within the time dlq prints, or COMMAND is stopped and dlq exits 70.

If dlq dies (kill -9) or is stopped, its watchdog stops every process of COMMAND: SIGTERM at once (stopped: before the lease's end), SIGKILL no later than the lease's end, whatever --kill-grace says.

While it waits on a terminal, a line on stderr (cut to the terminal's width, erased when the wait ends; none with --quiet) says for how long and who holds the lock.

On the file and ZooKeeper backends exclusive waiters get KEY in the order they arrived, and a try (--wait 0) does not pass them: it finds KEY busy while anyone waits for it.

Every word before -- must belong to a flag: a stray one (--wait 10 min) is a usage error (64), never dropped.

With --shared the lock is a reader lock (flock -s): any number of --shared holders hold KEY together, and a holder without it holds KEY alone; once such an exclusive holder waits, newly arriving --shared ones wait behind it, so readers cannot starve a writer. --shared does not combine with --limit.

COMMAND's environment gets DLQ_LOCK_KEY, DLQ_LOCK_OWNER and DLQ_FENCING_TOKEN (an integer that increases with every acquisition of KEY, for fencing writes downstream).`
  static examples = [
    {description: 'Guard a cron job: skip this run if the previous one still holds the lock.', command: '<%= config.bin %> lock run --key backup --wait 0 -- /usr/local/bin/backup.sh'},
    {description: 'Serialise deploys, waiting up to 10 minutes for the one before.', command: '<%= config.bin %> lock run --key deploy --wait 10m -- ./deploy.sh production'},
    {description: 'At most 3 concurrent builds, on a shared Redis.', command: '<%= config.bin %> lock run -b redis://ci-redis --key build --limit 3 -- make -j8'},
    {description: 'Readers together, a writer alone (flock -s): backups read while no migration writes.', command: '<%= config.bin %> lock run --key db --shared -- ./backup.sh'},
    {description: 'Use a shell only when you want one.', command: `<%= config.bin %> lock run --key report -- sh -c 'generate | gzip > report.gz'`},
  ]
  static strict = false
  static usage = 'lock run --key KEY [FLAGS] -- COMMAND [ARGS...]'

  static flags = {
    key: keyFlag,
    wait: waitFlag('forever'),
    nonblock: nonblockFlag,
    ttl: ttlFlag('Lease length; renewed every ttl/3 while the command runs.'),
    limit: limitFlag,
    shared: sharedFlag,
    'conflict-exit-code': conflictFlag,
    'kill-grace': Flags.string({summary: 'After SIGTERM to a command whose lock was lost, wait this long before SIGKILL (should dlq die or be stopped, SIGKILL comes by the lease\'s end).', default: '10s', helpValue: 'DURATION'}),
    quiet: Flags.boolean({char: 'q', summary: 'Print nothing of dlq\'s own (the command\'s output still flows).'}),
  }

  async run(): Promise<void> {
    const {flags, argv} = await this.parse(LockRun)
    const {command, stray} = splitAtDashes(this.argv, argv as string[])
    refuseStray(stray)
    return lockRun(flags, command, this.session)
  }
}
