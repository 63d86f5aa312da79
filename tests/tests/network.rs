//! NetworkInit inside a network namespace the test creates: the agent runs under
//! `ip netns exec` (its unix socket is still reachable: it is a path), configures a veth
//! interface through netlink, and refuses bad input without changing anything.

use system_tests::requests::{init_outcome, network};
use system_tests::{guestctl, Agent, NetNs, Scratch};

const IF: &str = "eth0";
const PEER: &str = "eth0p";

fn namespace() -> anyhow::Result<NetNs> {
    let ns = NetNs::new()?;
    ns.add_veth(IF, PEER)?;
    Ok(ns)
}

/// The interface as a fresh guest has it: down, no IPv4 address, no default route.
fn assert_untouched(ns: &NetNs) -> anyhow::Result<()> {
    assert!(!ns.is_up(IF)?, "{IF} was brought up");
    assert!(
        ns.ipv4_addrs(IF)?.is_empty(),
        "{IF} got addresses {:?}",
        ns.ipv4_addrs(IF)?
    );
    assert_eq!(ns.default_route()?, None, "a default route appeared");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_init_configures_address_link_and_default_route() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let ns = namespace()?;
    assert_untouched(&ns)?;
    let agent = Agent::builder(&s).netns(ns.name()).start().await?;
    let mut rpc = agent.rpc().await?;
    let req = network(IF, Some("10.99.0.2/24"), Some("10.99.0.1"));
    let r = rpc.init(req.clone()).await??;
    assert_eq!(init_outcome(&r), Ok(()));
    assert!(ns.is_up(IF)?, "{IF} is up");
    assert_eq!(ns.ipv4_addrs(IF)?, vec!["10.99.0.2/24".to_string()]);
    assert_eq!(
        ns.default_route()?,
        Some(("10.99.0.1".to_string(), IF.to_string()))
    );
    // The identical request again: success, nothing duplicated.
    let r = rpc.init(req).await??;
    assert_eq!(init_outcome(&r), Ok(()));
    assert_eq!(ns.ipv4_addrs(IF)?, vec!["10.99.0.2/24".to_string()]);
    // A different one: refused, the configuration stays.
    let r = rpc
        .init(network(IF, Some("10.99.0.3/24"), Some("10.99.0.1")))
        .await??;
    assert!(
        init_outcome(&r).is_err(),
        "a second, different Init is refused"
    );
    assert_eq!(ns.ipv4_addrs(IF)?, vec!["10.99.0.2/24".to_string()]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_network_input_is_an_error_and_changes_nothing() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let ns = namespace()?;
    let cases = [
        (
            network("nosuch0", Some("10.99.0.2/24"), Some("10.99.0.1")),
            "nosuch0",
        ),
        (
            network(IF, Some("10.99.0.2/33"), Some("10.99.0.1")),
            "10.99.0.2/33",
        ),
        (network(IF, Some("banana"), None), "banana"),
        (
            network(IF, Some("10.99.0.2"), Some("10.99.0.1")),
            "10.99.0.2",
        ),
        (
            network(IF, Some("10.99.0.2/24"), Some("10.98.0.1")),
            "10.98.0.1",
        ),
        (
            network(IF, Some("10.99.0.2/24"), Some("not-an-ip")),
            "not-an-ip",
        ),
    ];
    for (req, mention) in cases {
        // A fresh agent for each: the once-only rule must not hide the validation.
        let agent = Agent::builder(&s).netns(ns.name()).start().await?;
        let mut rpc = agent.rpc().await?;
        let r = rpc.init(req.clone()).await??;
        let reason = init_outcome(&r).expect_err(&format!("must fail: {req:?}"));
        println!("{req:?} -> {reason}");
        assert!(
            reason.contains(mention),
            "the reason should name {mention:?}: {reason}"
        );
        assert_untouched(&ns)?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guestctl_init_network_flags() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let ns = namespace()?;
    let agent = Agent::builder(&s).netns(ns.name()).start().await?;
    let c = guestctl::run(&[
        "--connect",
        &agent.uri(),
        "init",
        "--interface",
        IF,
        "--ip",
        "10.99.0.2/24",
        "--gateway",
        "10.99.0.1",
    ])
    .await?;
    assert_eq!(c.code, Some(0), "{c}");
    assert_eq!(ns.ipv4_addrs(IF)?, vec!["10.99.0.2/24".to_string()]);
    assert_eq!(
        ns.default_route()?,
        Some(("10.99.0.1".to_string(), IF.to_string()))
    );
    Ok(())
}
