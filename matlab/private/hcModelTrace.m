function res = hcModelTrace(prob, m, method, seed)
    % HCMODELTRACE  Randomized trace of the Hessian from M products computed in MATLAB (internal).
    %   RES = HCMODELTRACE(PROB, M, METHOD, SEED): RES.trace, RES.stderr, RES.num_matvecs. Rademacher
    %   probes z (entries +-1), for which E[z' H z] = trace(H):
    %     'hutchinson'  the mean of M samples z' H z; stderr std / sqrt(M)
    %     'hutch++'     (Meyer et al. 2021; default) floor(M/3) probes S, Q = orth(H S), the exact
    %                   trace(Q' H Q), plus Hutchinson on the rest projected off Q; unbiased, and exact
    %                   (stderr 0) once the sketch spans the range of H (its size is capped at P)
    %   as the Python side (hessian_core.spectral.trace) does. SEED ([] for the current random stream)
    %   seeds MATLAB's generator for the probes; the caller's generator state is restored afterwards.
    %   M probe vectors of P doubles must fit 'MemoryBudget' ('hessiancore:memoryBudget' before any work, as
    %   on the Python side); the Hutchinson probes are drawn in blocks of 32.
    method = lower(char(method));
    if strcmp(method, 'hutchinson')
        least = 1;
    elseif strcmp(method, 'hutch++')
        least = 3;
    else
        error('hessiancore:invalidOption', ['dlhessianTrace: the MATLAB backend implements the methods ', ...
                                            '''hutch++'' and ''hutchinson''; got ''%s'''], method);
    end
    if m < least
        error('hessiancore:invalidOption', 'dlhessianTrace: %s needs NumMatvecs >= %d, got %d', method, least, m);
    end
    if ~isempty(seed)
        previous = rng();
        restore = onCleanup(@() rng(previous));
        rng(seed, 'twister');
    end
    P = prob.P;
    % Like the Python bridge (bridge.api._check_probes): M probe vectors of P doubles must fit the budget,
    % checked before anything is drawn, so that a huge 'NumMatvecs' is refused at once.
    budget = hcMemoryBudget(prob.MemoryBudget);
    need = 8 * P * m;
    if need > budget
        error('hessiancore:memoryBudget', ['dlhessianTrace: %d probe vectors of P = %d values (''NumMatvecs'') ', ...
                                           'need %.3g GB, more than the memory budget of %.3g GB; lower ', ...
                                           '''NumMatvecs'' or raise ''MemoryBudget'''], m, P, need / 1e9, ...
              budget / 1e9);
    end
    if strcmp(method, 'hutchinson')
        samples = blockSamples(prob, m, zeros(P, 0));
        res = struct('trace', mean(samples), 'stderr', stderrOf(samples), 'num_matvecs', m);
        return
    end
    s = min(floor(m / 3), P);   % a sketch of P vectors spans everything: the trace is then exact
    [Q, ~] = qr(hcModelHvp(prob, probes(P, s)), 0);
    Q = Q(:, 1:s);
    exact = sum(sum(Q .* hcModelHvp(prob, Q)));
    used = 2 * s;
    rest = m - used;
    if rest <= 0 || s == P
        res = struct('trace', exact, 'stderr', 0, 'num_matvecs', used);
        return
    end
    samples = blockSamples(prob, rest, Q);
    res = struct('trace', exact + mean(samples), 'stderr', stderrOf(samples), 'num_matvecs', used + rest);
end

function Z = probes(P, n)
    % N Rademacher vectors of length P (entries +-1).
    Z = 2 * double(rand(P, n) < 0.5) - 1;
end

function samples = blockSamples(prob, n, Q)
    % N Hutchinson samples z' H z for probes z projected off the orthonormal columns of Q, drawn in blocks
    % of 32 (hcModelHvp's block), so that memory stays P x 32 whatever N.
    block = 32;
    samples = zeros(1, n);
    for first = 1:block:n
        cols = first:min(first + block - 1, n);
        Z = probes(prob.P, numel(cols));
        if ~isempty(Q)
            Z = Z - Q * (Q' * Z);
        end
        samples(cols) = sum(Z .* hcModelHvp(prob, Z), 1);
    end
end

function se = stderrOf(samples)
    if numel(samples) > 1
        se = std(samples) / sqrt(numel(samples));
    else
        se = Inf;
    end
end
