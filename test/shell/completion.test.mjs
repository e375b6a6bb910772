// `dlq completion bash|zsh|fish`, loaded into the real shells as the man page says, completing
// real lines: topics, commands, flags, the keys and queues the backend knows (-b on the line), and
// after `--` the command dlq runs. zsh loads the bash function through bashcompinit; it is called
// here as zsh's _bash_complete calls it (sh emulation), and zsh filters the words by what was typed.
import assert from 'node:assert/strict'
import {spawnSync} from 'node:child_process'
import {mkdtempSync, rmSync, symlinkSync, mkdirSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {after, before, describe, it} from 'node:test'

import {BIN} from '../support/cli.mjs'

let dir
let env
let url

function sh(shell, args, script) {
  const r = spawnSync(shell, [...args, script], {encoding: 'utf8', env, cwd: dir, timeout: 60_000})
  assert.equal(r.status, 0, `${shell} exited ${r.status ?? r.signal}:\n${r.stdout}${r.stderr}`)
  assert.equal(r.stderr, '', `${shell} wrote to stderr:\n${r.stderr}`)
  return r.stdout
}

function dlq(...args) {
  const r = spawnSync(BIN, args, {encoding: 'utf8', env})
  assert.equal(r.status, 0, r.stderr)
  return r.stdout
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'dlq-completion-'))
  mkdirSync(join(dir, 'bin'))
  mkdirSync(join(dir, 'backend'))
  symlinkSync(BIN, join(dir, 'bin', 'dlq')) // the completion runs `dlq … status` as typed
  env = {...process.env, PATH: `${join(dir, 'bin')}:${process.env.PATH}`, HOME: dir, XDG_STATE_HOME: join(dir, 'state')}
  delete env.DLQ_BACKEND
  url = `file://${join(dir, 'backend')}`
  dlq('lock', 'acquire', '-b', url, '--key', 'deploy', '--ttl', '10m')
  dlq('lock', 'acquire', '-b', url, '--key', 'backup', '--ttl', '10m')
  spawnSync(BIN, ['queue', 'push', '-b', url, '--queue', 'jobs'], {input: 'x\n', env})
})
after(() => rmSync(dir, {recursive: true, force: true}))

describe('dlq completion', () => {
  it('refuses a shell it does not know with a usage error (64) naming it', () => {
    const r = spawnSync(BIN, ['completion', 'tcsh'], {encoding: 'utf8', env})
    assert.equal(r.status, 64)
    assert.equal(r.stdout, '')
    assert.match(r.stderr, /^dlq: unknown shell "tcsh": dlq completes bash, zsh, fish/)
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr)
  })

  it('bash: commands, flags, keys and queues on the backend of the line, commands after --', () => {
    const out = sh('bash', ['--norc', '-c'], `
      eval "$(dlq completion bash)"
      c() { COMP_WORDS=("$@"); COMP_CWORD=$((\${#COMP_WORDS[@]} - 1)); COMPREPLY=(); _dlq; echo "$(printf '%s\\n' "\${COMPREPLY[@]}" | sort -u | tr '\\n' ' ')"; }
      c dlq ''
      c dlq lock ru
      c dlq lock run --ke
      c dlq -b ${url} lock run --key ''
      c dlq --backend=${url} lock status -k d
      c dlq queue pop -b ${url} --queue j
      c dlq lock run --key k -- printen
      c dlq completion ''
      c dlq lock run --ttl ''
      complete -p dlq`)
    const lines = out.split('\n')
    assert.deepEqual(lines.slice(0, 9).map((l) => l.trim()), [
      '--help --version completion help lock queue',
      'run',
      '--key',
      'backup deploy',
      'deploy',
      'jobs',
      'printenv',
      'bash fish zsh',
      '',
    ])
    assert.match(lines[9], /^complete .*-F _dlq dlq$/)
  })

  it('zsh: registered through bashcompinit, and the same words under its sh emulation', () => {
    const out = sh('zsh', ['-f', '-c'], `
      autoload -U compinit && compinit -u -D
      eval "$(dlq completion zsh)"
      print -r -- "$_comps[dlq]"
      c() { emulate -L sh; setopt kshglob noshglob braceexpand; COMP_WORDS=("$@"); COMP_CWORD=$(( \${#COMP_WORDS[@]} - 1 )); COMPREPLY=(); _dlq; print -r -- "\${(j: :)\${(ou)COMPREPLY[@]}}"; }
      c dlq lock ru
      c dlq -b ${url} lock run --key ''
      c dlq queue pop -b ${url} --queue ''
      c dlq completion ''`)
    const lines = out.split('\n')
    assert.match(lines[0], /_bash_complete .*-F _dlq/)
    assert.deepEqual(lines.slice(1, 5), ['acquire release renew run status', 'backup deploy', 'jobs', 'bash fish zsh'])
  })

  it('fish: commands with descriptions, flags, keys and queues, commands after --', () => {
    const out = sh('fish', ['--no-config', '-c'], `
      dlq completion fish | source
      for line in 'dlq ' 'dlq lock ru' 'dlq lock run --ke' 'dlq -b ${url} lock run --key ' 'dlq queue pop -b ${url} --queue j' 'dlq lock run -k x -- printen' 'dlq lock run --ttl '
        # (an empty substitution would drop the whole word: set it apart)
        set -l words (complete -C "$line" | string replace -r '\\t.*' '' | sort -u | string join ' ')
        echo "$line => $words"
      end`)
    assert.deepEqual(out.replace(/\n$/, '').split('\n'), [
      'dlq  => completion help lock queue',
      'dlq lock ru => run',
      'dlq lock run --ke => --key',
      `dlq -b ${url} lock run --key  => backup deploy`,
      `dlq queue pop -b ${url} --queue j => jobs`,
      'dlq lock run -k x -- printen => printenv',
      'dlq lock run --ttl  => ',
    ])
  })
})
