// Shell completion scripts (`dlq completion bash|zsh|fish`), written from the commands' metadata
// (oclif.manifest.json, the same that --help and the man pages come from), so they cannot drift
// and nothing is computed at completion time but the words themselves. Completed: topics,
// commands, flags (both spellings) and, where dlq can ask cheaply, the keys (--key) and queues
// (--queue) that `lock status`/`queue status` know on the backend the line names (-b), or the
// default. After `--`, the shell's own completion of commands and files.

export interface CompletionFlag {
  name: string
  char?: string
  type: 'boolean' | 'option'
  allowNo?: boolean
  summary?: string
  description?: string
}

export interface CompletionCommand {
  id: string // topic:command
  summary?: string
  flags: Record<string, CompletionFlag>
}

export const shells = ['bash', 'zsh', 'fish'] as const
export type Shell = (typeof shells)[number]

/** What each flag's value is: a key or a queue name that dlq can list; anything else is typed. */
const nameKind = (flag: string): 'lock' | 'queue' | undefined => (flag === 'key' ? 'lock' : flag === 'queue' ? 'queue' : undefined)

const firstLine = (text = '') => text.split('\n')[0].replace(/\.$/, '')
const sq = (text: string) => `'${text.replaceAll("'", "'\\''")}'`

/** Every spelling of a command's flags, and those that take a value (with the name kind it takes). */
function spellings(command: CompletionCommand): {all: string[]; valued: {spelling: string; kind?: 'lock' | 'queue'}[]} {
  const all: string[] = []
  const valued: {spelling: string; kind?: 'lock' | 'queue'}[] = []
  for (const flag of Object.values(command.flags)) {
    const forms = [`--${flag.name}`, ...(flag.char ? [`-${flag.char}`] : [])]
    all.push(...forms, ...(flag.allowNo ? [`--no-${flag.name}`] : []))
    if (flag.type === 'option') for (const spelling of forms) valued.push({spelling, kind: nameKind(flag.name)})
  }
  return {all: [...all, '--help'], valued}
}

function bash(commands: CompletionCommand[], topics: Record<string, string>, bin: string): string {
  const topicNames = Object.keys(topics)
  const cases = commands.map((command) => {
    const [topic, name] = command.id.split(':')
    const {all, valued} = spellings(command)
    const arms = (['lock', 'queue'] as const).flatMap((kind) => {
      const forms = valued.filter((v) => v.kind === kind).map((v) => v.spelling)
      return forms.length ? [`${forms.join('|')}) _${bin}_names ${kind}; return ;;`] : []
    })
    const typed = valued.filter((v) => !v.kind).map((v) => v.spelling)
    if (typed.length) arms.push(`${typed.join('|')}) return ;;`)
    return `    ${sq(`${topic} ${name ?? ''}`.trim())})
      case $prev in ${arms.join(' ')} esac
      words=${sq(all.join(' '))} ;;`
  })
  const subcommands = topicNames.map((topic) => `        ${topic}) words=${sq(commands.filter((c) => c.id.startsWith(`${topic}:`)).map((c) => c.id.split(':')[1]).join(' '))} ;;`)
  return `# ${bin} completion for bash (and zsh, through bashcompinit). In ~/.bashrc:
#   eval "$(${bin} completion bash)"
_${bin}_names() {
  # The keys or queues the backend on this line (-b URL) or the default knows; nothing if it cannot say.
  local field=key IFS=$'\\n'
  [ "$1" = queue ] && field=queue
  COMPREPLY=($(compgen -W "$("\${COMP_WORDS[0]}" "$1" status \${backend:+-b "$backend"} --json 2>/dev/null | sed -n "s/^ *\\"$field\\": \\"\\\\(.*\\\\)\\",\\\\{0,1\\\\}\\$/\\\\1/p")" -- "$cur"))
}
_${bin}() {
  # (not "path": zsh ties that name to PATH)
  local cur=\${COMP_WORDS[COMP_CWORD]} prev=\${COMP_WORDS[COMP_CWORD-1]} backend= seen= words= i
  COMPREPLY=()
  for ((i = 1; i < COMP_CWORD; i++)); do
    case \${COMP_WORDS[i]} in
      --) # the command dlq runs: complete it as the shell would
        if [ $((i + 1)) -eq $COMP_CWORD ]; then COMPREPLY=($(compgen -c -- "$cur")); else COMPREPLY=($(compgen -f -- "$cur")); fi
        return ;;
      -b|--backend) backend=\${COMP_WORDS[i+1]} ;;
      --backend=*) backend=\${COMP_WORDS[i]#--backend=} ;;
      -*) ;;
      *) case \${COMP_WORDS[i-1]} in -b|--backend) ;; *) seen="$seen \${COMP_WORDS[i]}" ;; esac ;;
    esac
  done
  set -- $seen
  case "$1\${2:+ $2}" in
${cases.join('\n')}
    *)
      case $1 in
${subcommands.join('\n')}
        '') words=${sq([...topicNames, 'completion', 'help', '--help', '--version'].join(' '))} ;;
        completion) words=${sq(shells.join(' '))} ;;
        *) return ;;
      esac ;;
  esac
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -o bashdefault -o default -F _${bin} ${bin}
`
}

function zsh(commands: CompletionCommand[], topics: Record<string, string>, bin: string): string {
  return `# ${bin} completion for zsh. In ~/.zshrc, after compinit:
#   eval "$(${bin} completion zsh)"
autoload -U +X bashcompinit && bashcompinit
${bash(commands, topics, bin).split('\n').filter((line) => !line.startsWith('#')).join('\n')}`
}

function fish(commands: CompletionCommand[], topics: Record<string, string>, bin: string): string {
  const lines = [
    `# ${bin} completion for fish:`,
    `#   ${bin} completion fish | source     (or save it as ~/.config/fish/completions/${bin}.fish)`,
    `function __${bin}_path --description 'the topic and command words on the line, and whether -- came'`,
    `    set -l tokens (commandline -opc)`,
    `    set -l path`,
    `    set -l skip 0`,
    `    for token in $tokens[2..-1]`,
    `        if test $skip = 1; set skip 0; continue; end`,
    `        if test "x$token" = x--; printf '%s\\n' --; return; end`,
    `        switch $token`,
    `            case -b --backend; set skip 1`,
    `            case '-*'`,
    `            case '*'; set -a path $token`,
    `        end`,
    `    end`,
    `    string join ' ' -- $path`,
    `end`,
    `function __${bin}_at --argument-names want`,
    `    set -l -- path (__${bin}_path)`,
    `    test "x$path" = "x$want"`,
    `end`,
    `function __${bin}_names --argument-names topic --description 'keys or queues the backend on the line knows'`,
    `    set -l tokens (commandline -opc)`,
    `    set -l backend`,
    `    for i in (seq (count $tokens))`,
    `        switch $tokens[$i]`,
    `            case -b --backend; set backend -b $tokens[(math $i + 1)]`,
    `            case '--backend=*'; set backend -b (string replace -- --backend= '' $tokens[$i])`,
    `        end`,
    `    end`,
    `    set -l field key; test $topic = queue; and set field queue`,
    `    $tokens[1] $topic status $backend --json 2>/dev/null | string replace -rf '^\\s*"'$field'": "(.*)",?$' '$1'`,
    `end`,
    `complete -c ${bin} -f`,
    `complete -c ${bin} -n '__${bin}_at ""' -a completion -d 'Print a shell completion script'`,
    `complete -c ${bin} -n '__${bin}_at ""' -a help -d 'Help on a topic or command'`,
    ...Object.entries(topics).map(([topic, description]) => `complete -c ${bin} -n '__${bin}_at ""' -a ${topic} -d ${sq(firstLine(description))}`),
    `complete -c ${bin} -n '__${bin}_at completion' -a ${sq(shells.join(' '))}`,
    `complete -c ${bin} -n '__${bin}_at --' -F -a '(__fish_complete_command)'`,
  ]
  for (const command of commands) {
    const [topic, name] = command.id.split(':')
    if (name) lines.push(`complete -c ${bin} -n '__${bin}_at ${topic}' -a ${name} -d ${sq(firstLine(command.summary))}`)
    const at = `__${bin}_at ${sq(`${topic} ${name ?? ''}`.trim()).replaceAll("'", '"')}`
    for (const flag of Object.values(command.flags)) {
      const kind = nameKind(flag.name)
      const parts = [`complete -c ${bin} -n ${sq(at)} -l ${flag.name}`]
      if (flag.char) parts.push(`-s ${flag.char}`)
      if (flag.type === 'option') parts.push('-x') // a value, never a file name
      if (kind) parts.push(`-a ${sq(`(__${bin}_names ${kind})`)}`)
      parts.push(`-d ${sq(firstLine(flag.summary ?? flag.description))}`)
      lines.push(parts.join(' '))
      if (flag.allowNo) lines.push(`complete -c ${bin} -n ${sq(at)} -l no-${flag.name}`)
    }
  }
  return `${lines.join('\n')}\n`
}

/** The completion script for `shell`. */
export function completionScript(shell: Shell, commands: CompletionCommand[], topics: Record<string, string>, bin = 'dlq'): string {
  const sorted = [...commands].sort((a, b) => a.id.localeCompare(b.id))
  return shell === 'bash' ? bash(sorted, topics, bin) : shell === 'zsh' ? zsh(sorted, topics, bin) : fish(sorted, topics, bin)
}
