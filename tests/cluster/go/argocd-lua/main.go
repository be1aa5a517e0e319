// argocd-lua evaluates an Argo CD resource health script the way Argo CD's application
// controller does (util/lua in argoproj/argo-cd, which does not build here): gopher-lua, the
// same Lua 5.1 engine, in a state without the standard libraries except package, base, table
// and a reduced os (Argo CD's "safe" os: time and date only), a one-second deadline, and the
// object converted from its JSON form (numbers as Lua numbers, null as nil). The result must
// be a table whose status is one of Argo CD's health codes, as Argo CD requires.
//
// Usage: argocd-lua SCRIPT < objects.jsonl  (one Kubernetes object per line; one JSON
// verdict {"status","message"} or {"error"} per line on stdout)
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
)

var healthCodes = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true, "Unknown": true,
}

type verdict struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
}

func toLua(state *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case json.Number:
		number, err := v.Float64()
		if err != nil {
			return lua.LString(v.String())
		}
		return lua.LNumber(number)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []interface{}:
		table := state.CreateTable(len(v), 0)
		for _, item := range v {
			table.Append(toLua(state, item))
		}
		return table
	case map[string]interface{}:
		table := state.CreateTable(0, len(v))
		for key, item := range v {
			table.RawSetString(key, toLua(state, item))
		}
		return table
	}
	return lua.LNil
}

func safeOs(state *lua.LState) int {
	reduced := state.NewTable()
	lua.OpenOs(state)
	standard := state.GetGlobal(lua.OsLibName).(*lua.LTable)
	for _, name := range []string{"time", "date"} {
		reduced.RawSetString(name, standard.RawGetString(name))
	}
	state.SetGlobal(lua.OsLibName, reduced)
	return 0
}

func evaluate(script string, object map[string]interface{}) verdict {
	state := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer state.Close()
	for _, open := range []struct {
		name string
		fn   lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		if err := state.CallByParam(lua.P{Fn: state.NewFunction(open.fn), Protect: true}, lua.LString(open.name)); err != nil {
			return verdict{Error: err.Error()}
		}
	}
	safeOs(state)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	state.SetContext(ctx)
	state.SetGlobal("obj", toLua(state, object))
	if err := state.DoString(script); err != nil {
		return verdict{Error: err.Error()}
	}
	table, ok := state.Get(-1).(*lua.LTable)
	if !ok {
		return verdict{Error: fmt.Sprintf("expect table output from Lua script, not %s", state.Get(-1).Type())}
	}
	status, message := table.RawGetString("status"), table.RawGetString("message")
	result := verdict{Status: lua.LVAsString(status), Message: lua.LVAsString(message)}
	if !healthCodes[result.Status] {
		return verdict{Status: "Unknown", Message: "Lua returned an invalid health status"}
	}
	return result
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: argocd-lua SCRIPT < objects.jsonl")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1<<20), 16<<20)
	out := json.NewEncoder(os.Stdout)
	for scanner.Scan() {
		decoder := json.NewDecoder(bytes.NewReader(scanner.Bytes()))
		decoder.UseNumber()
		var object map[string]interface{}
		if err := decoder.Decode(&object); err != nil {
			_ = out.Encode(verdict{Error: "not a JSON object: " + err.Error()})
			continue
		}
		_ = out.Encode(evaluate(string(script), object))
	}
	if err := scanner.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
