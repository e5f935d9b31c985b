# bash completion for seqshiftd(8)                                    -*- shell-script -*-
# Installed as /usr/share/bash-completion/completions/seqshiftd. The command and flag lists
# are checked against the binary's own flag sets by cmd/seqshiftd's TestCompletionKnowsEveryFlag.

_seqshiftd()
{
    local cur prev words cword
    _init_completion || return

    local commands="run check status flows teardown reload verify lab version help"
    local cmd="${words[1]}"

    if [[ $cword -eq 1 ]]; then
        COMPREPLY=($(compgen -W "$commands --help --version" -- "$cur"))
        return
    fi

    case $prev in
        -c)
            _filedir '@(yaml|yml)'
            return
            ;;
        --socket)
            _filedir
            return
            ;;
        --pid | --src | --dst | --sport | --dport | --rule)
            return
            ;;
        --state)
            COMPREPLY=($(compgen -W "syn_sent syn_recv established fin_wait close_wait last_ack time_wait close" -- "$cur"))
            return
            ;;
    esac

    local flags
    case $cmd in
        run) flags="-c" ;;
        teardown) flags="-c --record --table --priority --protocol --tun" ;;
        reload) flags="-c --socket --pid" ;;
        check) flags="-c --portable --plan" ;;
        status) flags="-c --socket --json" ;;
        flows) flags="-c --socket --json -C --src --dst --sport --dport --rule --state --watch" ;;
        lab) flags="--keep" ;;
        verify) flags="--json --strict"
            if [[ $cur != -* ]]; then
                _filedir '@(pcap|pcapng)'
                return
            fi
            ;;
        *) return ;;
    esac
    COMPREPLY=($(compgen -W "$flags --help" -- "$cur"))
} &&
    complete -F _seqshiftd seqshiftd

# ex: filetype=sh
