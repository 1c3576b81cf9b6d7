function varargout = hcModelEval(prob, mode, b, V)
    % HCMODELEVAL  The loss of one minibatch, its gradient, or Hessian-vector products, in MATLAB (internal).
    %   L = HCMODELEVAL(PROB, 'loss', B)              loss of minibatch B (double)
    %   [L, G] = HCMODELEVAL(PROB, 'gradient', B)     and its gradient, P x 1
    %   HV = HCMODELEVAL(PROB, 'hvp', B, V)           H_B * V for the columns of V (P x K), H_B the Hessian
    %                                                  of minibatch B's loss
    %   All inside one dlfeval call: the loss PROB.Loss(PROB.Net, X, T) (first output only), then
    %     g = dlgradient(loss, net.Learnables, 'EnableHigherDerivatives', true)   (the backward pass traced)
    %     H v = dlgradient(sum over learnables of g .* v, net.Learnables)          (double backpropagation)
    %   for each column v, with 'RetainData', true but for the last, so that the K products share one
    %   forward and one first backward pass (dlgradient page: RetainData, EnableHigherDerivatives).
    %   Order: Learnables rows, each Value(:) column-major.
    %   Errors: the function's own failure -> 'hessiancore:modelLoss'; a loss that is not a real dlarray
    %   scalar -> 'hessiancore:invalidInput'; first derivatives fine but not the second ->
    %   'hessiancore:higherDerivatives', naming the layers MATLAB documents as not twice differentiable;
    %   NaN/Inf -> 'hessiancore:nonFinite'.
    X = prob.X{b};
    T = prob.T{b};
    try
        switch mode
            case 'loss'
                varargout{1} = dlfeval(@lossTerms, prob.Net, X, T, prob.Loss, prob.Name);
            case 'gradient'
                [varargout{1}, varargout{2}] = dlfeval(@gradientTerms, prob.Net, X, T, prob.Loss, prob.Name);
            case 'hvp'
                V = cast(V, prob.DataType);
                varargout{1} = dlfeval(@hvpTerms, prob.Net, X, T, prob.Loss, prob.Name, V, prob.Sizes);
        end
    catch err
        if strncmp(err.identifier, 'hessiancore:', 12)
            rethrow(err);
        end
        if ~strcmp(mode, 'hvp')
            where = '';
            if numel(prob.X) > 1
                where = sprintf(' on minibatch %d', b);
            end
            error('hessiancore:modelLoss', ['%s failed%s: %s\n(If your function calls dlgradient itself, call it ', ...
                                            'only when nargout > 1, or with ''RetainData'', true: MATLAB discards ', ...
                                            'the derivative trace after a dlgradient call.)'], prob.Name, where, ...
                  err.message);
        end
        hcModelEval(prob, 'gradient', b);   % raises the error above when even first derivatives fail
        suspects = notTwiceDifferentiable(prob.Net);
        error('hessiancore:higherDerivatives', ['MATLAB computed the gradient of the %s but could not ', ...
                                                'differentiate it a second time (dlgradient with ', ...
                                                '''EnableHigherDerivatives''): %s%s'], prob.Name, err.message, ...
              suspects);
    end
    for i = 1:numel(varargout)
        if ~all(isfinite(varargout{i}(:)))
            error('hessiancore:nonFinite', 'the %s gave NaN or Inf (%s)', prob.Name, mode);
        end
    end
end

function loss = evaluate(net, X, T, fcn, name)
    loss = fcn(net, X, T);
    if ~isa(loss, 'dlarray')
        error('hessiancore:invalidInput', ['the %s returned a %s; the loss must be a dlarray scalar computed ', ...
                                           'from the network (do not extractdata it)'], name, class(loss));
    end
    if numel(loss) ~= 1 || ~isreal(extractdata(loss))
        error('hessiancore:invalidInput', 'the %s returned a loss of size [%s]; it must be a real scalar', name, ...
              num2str(size(loss)));
    end
end

function value = lossTerms(net, X, T, fcn, name)
    value = hcToDouble(evaluate(net, X, T, fcn, name));
end

function [value, grad] = gradientTerms(net, X, T, fcn, name)
    loss = evaluate(net, X, T, fcn, name);
    g = dlgradient(loss, net.Learnables);
    value = hcToDouble(loss);
    grad = flatten(g.Value);
end

function HV = hvpTerms(net, X, T, fcn, name, V, sizes)
    loss = evaluate(net, X, T, fcn, name);
    g = dlgradient(loss, net.Learnables, 'EnableHigherDerivatives', true);
    learnables = net.Learnables.Value;
    K = size(V, 2);
    HV = zeros(size(V, 1), K);
    for k = 1:K
        % A zero multiple of a learnable keeps g' * v traced when the gradient does not depend on the
        % learnables (a loss linear in them): its Hessian is then zero, not an error.
        gv = 0 * sum(learnables{1}, 'all');
        offset = 0;
        for i = 1:numel(sizes)
            n = prod(sizes{i});
            gv = gv + sum(g.Value{i} .* reshape(V(offset + 1:offset + n, k), sizes{i}), 'all');
            offset = offset + n;
        end
        h = dlgradient(gv, net.Learnables, 'RetainData', k < K);
        HV(:, k) = flatten(h.Value);
    end
end

function v = flatten(values)
    parts = cell(numel(values), 1);
    for i = 1:numel(values)
        parts{i} = hcToDouble(values{i});
        parts{i} = parts{i}(:);
    end
    v = vertcat(parts{:});
end

function note = notTwiceDifferentiable(net)
    % Layers whose operations MATLAB documents as having no higher-order derivatives (gru, lstm, embed,
    % as of R2024a: MathWorks Answers 587696 and the dlgradient page's limitations).
    classes = {'LSTMLayer', 'BiLSTMLayer', 'GRULayer', 'LSTMProjectedLayer', 'GRUProjectedLayer', ...
               'WordEmbeddingLayer'};
    found = {};
    layers = net.Layers;
    for i = 1:numel(layers)
        layer = layers(i);
        parts = strsplit(class(layer), '.');
        if any(strcmp(parts{end}, classes))
            found{end + 1} = sprintf('%s (%s)', layer.Name, parts{end}); %#ok<AGROW>
        end
    end
    if isempty(found)
        note = ['. MATLAB documents no higher-order derivatives through gru, lstm, embed, prod and interp1 ', ...
                '(R2024a) nor through custom layers with a custom backward function.'];
    else
        note = sprintf(['. Layers of this network that MATLAB documents as not supporting higher-order ', ...
                        'derivatives: %s.'], strjoin(found, ', '));
    end
end
