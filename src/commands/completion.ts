import * as Args from '@oclif/core/args'

import {DlqCommand} from '../base.js'
import {type CompletionCommand, completionScript, type Shell, shells} from '../completion.js'
import {usageError} from '../errors.js'

export default class Completion extends DlqCommand {
  static enableJsonFlag = false // it prints a script
  static summary = 'Print a shell completion script.'
  static description = `Prints a script that completes dlq's commands, flags and, where the backend can tell cheaply, the keys (--key) and queues (--queue) it knows, on the backend the line names with -b or the default. Load it from your shell's startup file:

  bash   eval "$(dlq completion bash)"          in ~/.bashrc
  zsh    eval "$(dlq completion zsh)"           in ~/.zshrc, after compinit
  fish   dlq completion fish | source           in ~/.config/fish/config.fish (or save it as ~/.config/fish/completions/dlq.fish)`
  static examples = ['<%= config.bin %> completion bash >> ~/.bashrc', '<%= config.bin %> completion fish > ~/.config/fish/completions/dlq.fish']
  static args = {shell: Args.string({description: `The shell: ${shells.join(', ')}.`, required: true})}

  async run(): Promise<void> {
    const {args} = await this.parse(Completion)
    if (!(shells as readonly string[]).includes(args.shell)) throw usageError(`unknown shell ${JSON.stringify(args.shell)}`, `dlq completes ${shells.join(', ')}`, 'dlq completion bash')
    // The commands as the manifest describes them (no command module is loaded for this).
    const commands: CompletionCommand[] = this.config.commands.filter((c) => c.id !== 'completion' && !c.hidden).map((c) => ({id: c.id, summary: c.summary, flags: c.flags as CompletionCommand['flags']}))
    // The topics package.json declares (config.topics also has one per command id).
    const declared = (this.config.pjson.oclif.topics ?? {}) as Record<string, {description?: string}>
    const topics = Object.fromEntries(Object.entries(declared).map(([name, topic]) => [name, topic.description ?? '']))
    process.stdout.write(completionScript(args.shell as Shell, commands, topics, this.config.bin))
  }
}
