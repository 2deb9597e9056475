#!/usr/bin/env escript
%% -*- erlang -*-
%%! -pa . -noshell
%% Credit-Control client built on Erlang/OTP diameter, used as an independent
%% peer by the shardgate interop tests.
%%
%% usage: ccr_client.escript Host Port Sessions
%%
%% Opens one connection (CER/CEA), then for each of Sessions sessions sends
%% CCR-Initial, CCR-Update and CCR-Terminate, and closes with DPR/DPA. Each
%% answer prints one line "CCA session=S type=T number=N result=R origin=O";
%% failures print "ERROR ..." and the exit status is the count of failures
%% (capped at 100). Every call times out after 5 s; Sessions is capped at 200.
-mode(compile).
-include_lib("diameter/include/diameter.hrl").

main([Host, PortText, CountText]) ->
    {ok, Addr} = inet:parse_address(Host),
    Port = list_to_integer(PortText),
    Count = min(200, list_to_integer(CountText)),
    ok = diameter:start(),
    Service = shardgate_interop,
    Origin = "erlclient.peers.test",
    ok = diameter:start_service(Service, [
        {'Origin-Host', Origin}, {'Origin-Realm', "peers.test"},
        {'Vendor-Id', 0}, {'Product-Name', "shardgate interop"},
        {'Host-IP-Address', [Addr]},
        {'Auth-Application-Id', [4]},
        {decode_format, map}, {string_decode, false},
        {application, [{alias, cc}, {dictionary, cc_min}, {module, diameter_callback}]}]),
    true = diameter:subscribe(Service),
    {ok, Ref} = diameter:add_transport(Service, {connect, [
        {transport_module, diameter_tcp},
        {transport_config, [{raddr, Addr}, {rport, Port}]},
        {watchdog_timer, 6000}, {reconnect_timer, 60000}]}),
    await_up(Service),
    Failures = lists:sum([run_session(Service, Origin, S) || S <- lists:seq(1, Count)]),
    ok = diameter:remove_transport(Service, Ref),
    await_down(Service),
    diameter:stop_service(Service),
    io:format("DONE sessions=~b failures=~b~n", [Count, Failures]),
    halt(min(100, Failures));
main(_) ->
    io:format("usage: ccr_client.escript Host Port Sessions~n"),
    halt(2).

await_up(Service) ->
    receive
        #diameter_event{service = Service, info = {up, _, _, _, _}} ->
            io:format("UP~n");
        #diameter_event{service = Service, info = Info} ->
            io:format("EVENT ~p~n", [element(1, Info)]),
            await_up(Service)
    after 5000 ->
        io:format("ERROR no CEA within 5 s~n"),
        halt(101)
    end.

await_down(Service) ->
    receive
        #diameter_event{service = Service, info = {down, _, _, _}} -> io:format("DOWN~n");
        #diameter_event{service = Service, info = _} -> await_down(Service)
    after 3000 -> io:format("ERROR no DPA within 3 s~n")
    end.

run_session(Service, Origin, S) ->
    Sid = diameter:session_id(Origin),
    lists:sum([ccr(Service, Origin, Sid, S, Type, Type - 1) || Type <- [1, 2, 3]]).

ccr(Service, Origin, Sid, S, Type, Number) ->
    Req = ['CCR', {'Session-Id', Sid},
           {'Origin-Host', Origin}, {'Origin-Realm', "peers.test"},
           {'Destination-Realm', "gateway.test"},
           {'Auth-Application-Id', 4},
           {'Service-Context-Id', "32251@3gpp.org"},
           {'CC-Request-Type', Type}, {'CC-Request-Number', Number}],
    case diameter:call(Service, cc, Req, [{timeout, 5000}]) of
        ['CCA' | #{'Result-Code' := R, 'Origin-Host' := O}] ->
            io:format("CCA session=~b type=~b number=~b result=~b origin=~s~n",
                      [S, Type, Number, R, O]),
            case R of 2001 -> 0; _ -> 1 end;
        Other ->
            io:format("ERROR session=~b type=~b: ~p~n", [S, Type, Other]),
            1
    end.
