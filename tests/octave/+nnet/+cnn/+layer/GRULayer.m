classdef GRULayer < nnet.cnn.layer.Layer
    % Test double of gruLayer(numHiddenUnits, Name=Value)
    % (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.grulayer.html): NumHiddenUnits H
    % (a positive integer), OutputMode 'sequence' (default: 'CBT' out) or 'last' ('CB' out),
    % StateActivationFunction 'tanh' (default) or 'softsign', GateActivationFunction 'sigmoid' (default)
    % or 'hard-sigmoid', HasStateInputs and HasStateOutputs (default false), InputSize 'auto' until
    % initialized; learnables InputWeights 3H x InputSize, RecurrentWeights 3H x H, Bias 3H x 1
    % (gates reset, update, candidate);
    % ResetGateMode 'after-multiplication' (default), 'before-multiplication' or
    % 'recurrent-bias-after-multiplication' (Bias 6H x 1); state HiddenState, H x 1 (zeros at initialization).
    % Takes 'CBT' input. predict: see predictLayer (differentiable once, as MATLAB documents).
    properties
        InputSize = 'auto'
        NumHiddenUnits = []
        OutputMode = 'sequence'
        StateActivationFunction = 'tanh'
        GateActivationFunction = 'sigmoid'
        HasStateInputs = false
        HasStateOutputs = false
        ResetGateMode = 'after-multiplication'
        InputWeights = []
        RecurrentWeights = []
        Bias = []
        HiddenState = []
    end
    properties (Constant)
        DefaultName = 'gru'
    end
    methods

        function layer = set.NumHiddenUnits(layer, value)
            layer.NumHiddenUnits = hcTestCheck(value, 'posint', 'NumHiddenUnits');
        end

        function layer = set.InputSize(layer, value)
            layer.InputSize = hcTestCheck(value, 'auto-or-posint', 'InputSize');
        end

        function layer = set.OutputMode(layer, value)
            layer.OutputMode = hcTestCheck(value, 'member', 'OutputMode', {'sequence', 'last'});
        end

        function layer = set.StateActivationFunction(layer, value)
            layer.StateActivationFunction = hcTestCheck(value, 'member', 'StateActivationFunction', ...
                                                        {'tanh', 'softsign'});
        end

        function layer = set.GateActivationFunction(layer, value)
            layer.GateActivationFunction = hcTestCheck(value, 'member', 'GateActivationFunction', ...
                                                       {'sigmoid', 'hard-sigmoid'});
        end

        function layer = set.HasStateInputs(layer, value)
            layer.HasStateInputs = hcTestCheck(value, 'logical', 'HasStateInputs');
        end

        function layer = set.HasStateOutputs(layer, value)
            layer.HasStateOutputs = hcTestCheck(value, 'logical', 'HasStateOutputs');
        end

        function layer = set.ResetGateMode(layer, value)
            layer.ResetGateMode = hcTestCheck(value, 'member', 'ResetGateMode', ...
                                              {'after-multiplication', 'before-multiplication', ...
                                               'recurrent-bias-after-multiplication'});
        end

        function names = learnableNames(~)
            names = {'InputWeights', 'RecurrentWeights', 'Bias'};
        end

        function names = stateNames(~)
            names = {'HiddenState'};
        end

        function shapes = parameterShapes(layer, inSizes, inFmts)
            if ~strcmp(inFmts{1}, 'CBT')
                error('hessiancoreTest:format', 'layer ''%s'': gruLayer takes ''CBT'' input here, got ''%s''', ...
                      layer.Name, inFmts{1});
            end
            H = layer.NumHiddenUnits;
            rows = 3 * H;
            biasRows = rows;
            if strcmp(layer.ResetGateMode, 'recurrent-bias-after-multiplication')
                biasRows = 2 * rows;
            end
            shapes = {[rows, inSizes{1}], [rows, H], [biasRows, 1], [H, 1]};
        end

        function value = initialValue(layer, name, shape, inSizes)
            switch name
                case {'InputWeights', 'RecurrentWeights'}
                    % MATLAB: Glorot and orthogonal; any random values serve the tests.
                    value = nnet.cnn.layer.Layer.glorot(shape, shape(2), shape(1));
                otherwise
                    value = initialValue@nnet.cnn.layer.Layer(layer, name, shape, inSizes);
            end
        end

        function [sz, fmt] = outputSize(layer, ~, ~)
            sz = layer.NumHiddenUnits;
            fmt = 'CBT';
            if strcmp(layer.OutputMode, 'last')
                fmt = 'CB';
            end
        end

        function Y = predictLayer(layer, X, p)
            % The gruLayer page's recurrence (gates reset, update, candidate): r, z = sigmoid(W x_t + R h +
            % b); h~ = tanh(W_h x_t + b_h + r .* (R_h h)) ('after-multiplication'), tanh(W_h x_t + b_h +
            % R_h (r .* h)) ('before-multiplication'), with the recurrent bias b_Rh inside r .* (...) for
            % 'recurrent-bias-after-multiplication' (Bias 6H); h = (1 - z) .* h~ + z .* h. Zero initial
            % state, default activations only. Differentiable once: no higher-order derivatives through gru.
            checkActivations(layer);
            H = layer.NumHiddenUnits;
            xs = stripdims(X);
            B = size(xs, 2);
            T = size(xs, 3);
            W = p.InputWeights;
            R = p.RecurrentWeights;
            bw = p.Bias(1:3 * H);
            br = 0 * p.Bias(1:3 * H);
            if strcmp(layer.ResetGateMode, 'recurrent-bias-after-multiplication')
                br = p.Bias(3 * H + 1:6 * H);
            end
            h = zeros(H, B);
            steps = cell(1, T);
            for t = 1:T
                wx = W * xs(:, :, t) + bw;
                rh = R(1:2 * H, :) * h + br(1:2 * H);
                r = sigmoid(wx(1:H, :) + rh(1:H, :));
                z = sigmoid(wx(H + 1:2 * H, :) + rh(H + 1:2 * H, :));
                if strcmp(layer.ResetGateMode, 'before-multiplication')
                    cand = tanh(wx(2 * H + 1:3 * H, :) + R(2 * H + 1:3 * H, :) * (r .* h));
                else
                    cand = tanh(wx(2 * H + 1:3 * H, :) + r .* (R(2 * H + 1:3 * H, :) * h + br(2 * H + 1:3 * H)));
                end
                h = (1 - z) .* cand + z .* h;
                steps{t} = h;
            end
            Y = recurrentOutput(layer, steps, 'gru');
        end

        function Y = recurrentOutput(layer, steps, fname)
            % The hidden states of every time step as H x B x T 'CBT' ('sequence') or the last as 'CB',
            % marked: MATLAB documents no higher-order derivatives through FNAME (Answers 587696).
            if strcmp(layer.OutputMode, 'last')
                Y = dlarray(steps{end}, 'CB');
            else
                T = numel(steps);
                Y = 0;
                for t = 1:T
                    E = zeros(1, 1, T);
                    E(t) = 1;
                    Y = Y + reshape(steps{t}, size(steps{t}, 1), size(steps{t}, 2), 1) .* E;
                end
                Y = dlarray(Y, 'CBT');
            end
            Y = dlarray.noHigherDerivatives(Y, fname);
        end

        function checkActivations(layer)
            if ~strcmp(layer.StateActivationFunction, 'tanh') || ~strcmp(layer.GateActivationFunction, 'sigmoid')
                error('hessiancoreTest:notImplemented', ['layer ''%s'': only the default activations (tanh, ', ...
                                                         'sigmoid) are in the double''s predict'], layer.Name);
            end
        end

    end
end
